"""DDIM's latent space: ``tinydiff invert`` (images -> latents x_T), ``interpolate`` (slerp and linear
paths between two latents) and ``merge`` (inversion-merge of two images)."""

from __future__ import annotations

import torch

from ..errors import TinydiffError
from . import COUNT, SEED, device_option, integer, model_name, output_options, output_path


def add_parser(sub, common) -> None:
    p = sub.add_parser("invert", parents=[common], help="DDIM inversion: images -> latents x_T (.npz)")
    p.add_argument(
        "--ckpt", default="pretrained:mnist", help="a run or checkpoint directory (default: pretrained:mnist)"
    )
    p.add_argument("--images", required=True, help="an .npz, an image folder or a dataset spec (mnist:test)")
    p.add_argument("--n", type=COUNT, default=None, help="the first n images (default: all)")
    p.add_argument("--steps", type=COUNT, default=50, help="trajectory length S (S network calls each way)")
    p.add_argument("--spacing", default="uniform")
    output_options(p, "the latents: z (float32 [N, C, H, W]), steps, spacing (.npz)")
    device_option(p)
    p.set_defaults(func=run_invert)
    for name, helptext, func in (
        ("interpolate", "decode slerp and linear paths between two latents (a grid)", run_interpolate),
        ("merge", "inversion-merge of two images beside their pixel mix (a grid)", run_merge),
    ):
        p = sub.add_parser(name, parents=[common], help=helptext)
        p.add_argument(
            "--ckpt", default="pretrained:mnist", help="a run or checkpoint directory (default: pretrained:mnist)"
        )
        p.add_argument("--images", required=name == "merge", help="images to invert: .npz, folder or dataset spec")
        p.add_argument("--pick", type=integer(0), nargs=2, default=[0, 1], metavar=("I", "J"), help="which two images")
        p.add_argument("--frames", type=COUNT, default=9, help="mixing weights from 0 to 1")
        p.add_argument("--steps", type=COUNT, default=50)
        p.add_argument("--seed", type=SEED, default=0, help="interpolate without --images: seed of the two x_T")
        output_options(p, "the PNG grid")
        device_option(p)
        p.set_defaults(func=func)


def images(spec: str, n: int | None = None, pick: list[int] | None = None):
    """uint8 images (and labels) of an npz, folder or dataset spec: the first n, or those at pick."""
    from ..data import load_dataset

    data = load_dataset(spec)
    if pick is not None:
        bad = [i for i in pick if not 0 <= i < len(data)]
        if bad:
            raise TinydiffError(f"--pick {bad[0]}: {spec} has images 0..{len(data) - 1}")
        return data.select(torch.tensor(pick), spec)
    return data.select(torch.arange(min(n or len(data), len(data))), spec)


def run_invert(args) -> None:
    import numpy as np

    from ..api import check_images, decode, invert
    from ..model import load
    from ..viz import npz_path

    default = f"latents-{model_name(args.ckpt)}-S{args.steps}.npz"
    out = output_path(args.out and npz_path(args.out), default, args.overwrite)
    model = load(args.ckpt, device=args.device)
    data = images(args.images, args.n)
    check_images(data.images, model, f"images of {args.images}")
    latents = invert(model, data.images, steps=args.steps, spacing=args.spacing, progress=not args.quiet)
    back = decode(model, latents, steps=args.steps, spacing=args.spacing)
    mse = (back.cpu() - (data.images.float() / 127.5 - 1)).pow(2).mean().item()
    np.savez(out, z=latents.cpu().numpy(), steps=args.steps, spacing=args.spacing)
    print(f"latents: {out} ({len(latents)} x {tuple(latents.shape[1:])}, S = {args.steps})")
    print(f"reconstruction MSE per dimension (decoded with DDIM, S = {args.steps}): {mse:.6f}")


def run_interpolate(args) -> None:
    from ..api import check_images, invert
    from ..experiments.latent import interpolate
    from ..model import load
    from ..viz import save_grid

    out = output_path(args.out, f"interpolate-{model_name(args.ckpt)}-S{args.steps}.png", args.overwrite)
    model = load(args.ckpt, device=args.device)
    if args.images:
        data = images(args.images, pick=args.pick)
        z = invert(model, check_images(data.images, model, f"images of {args.images}"), steps=args.steps)
    else:
        z = torch.randn((2, *model.image_shape), generator=torch.Generator().manual_seed(args.seed))
    spherical, linear = interpolate(model, z[:1], z[1:], args.frames, args.steps)
    print(f"grid: {save_grid(torch.cat([spherical, linear]), out, args.frames)} (row 1: slerp, row 2: linear)")


def run_merge(args) -> None:
    from ..api import check_images
    from ..experiments.latent import merge
    from ..model import load
    from ..viz import save_grid

    out = output_path(args.out, f"merge-{model_name(args.ckpt)}-S{args.steps}.png", args.overwrite)
    model = load(args.ckpt, device=args.device)
    pair = check_images(images(args.images, pick=args.pick).images, model, f"images of {args.images}")
    merged, pixel = merge(model, pair[:1], pair[1:], args.frames, args.steps)
    grid = save_grid(torch.cat([merged, pixel]), out, args.frames)
    print(f"grid: {grid} (row 1: inversion-merge, row 2: pixel mix; lambda from 0 to 1)")
