"""A peer for time_to_quality.py: lucidrains' denoising-diffusion-pytorch, the library a replication
of DDPM used, trained on this machine for a wall-clock budget with the settings that replication
gave its Trainer, and sampled with its own sampler.

Settings (the replication's): Unet(dim=64, dim_mults=(1, 2, 4, 8)), GaussianDiffusion with 1,000
timesteps and its defaults (v-prediction, the sigmoid schedule), batch 32 with 2 accumulated, Adam
at 8e-5 with betas (0.9, 0.99), gradient norm clipped at 1, an EMA of 0.995 updated every 10 steps,
mixed precision (bf16 autocast here: the CPU has no fp16 path); sampling: its DDIM with
sampling_timesteps = 20 (20 network evaluations, like ours). Scaled to the budget: the run stops on
the clock. Two changes forced by the data: images are padded from 28x28 to 32x32 with background
(its U-Net halves the size three times) and cropped back for scoring; no horizontal flips (its
Trainer's default): a mirrored digit is not a digit.

It is not a tinydiff dependency. Install it beside the project once (no dependencies: it would pull
torchvision, which does not import against the CPU PyTorch build used here; the two torchvision
modules it imports are only used by its Trainer and are stood in for):

    .venv/bin/pip install --no-deps --target runs/peers denoising-diffusion-pytorch==2.3.4 \\
        ema-pytorch==0.8.3 einops==0.8.2 accelerate==1.16.0
"""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

SITE = Path(__file__).resolve().parent.parent / "runs" / "peers"
SETTINGS = {"dim": 64, "dim_mults": (1, 2, 4, 8), "batch": 32, "accumulate": 2, "lr": 8e-5, "ema": 0.995}


def padding(size: int) -> int:
    """Background added on each side: its U-Net halves the size three times (28 -> 32)."""
    return (-size % 8) // 2


def library():
    """denoising_diffusion_pytorch, imported from runs/peers with torchvision stood in for."""
    if not (SITE / "denoising_diffusion_pytorch").is_dir():
        raise SystemExit(f"the peer is not installed: see {Path(__file__).name}'s docstring")
    sys.path.insert(0, str(SITE))
    for name in ("torchvision", "torchvision.transforms", "torchvision.utils"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["torchvision"].transforms = sys.modules["torchvision.transforms"]
    sys.modules["torchvision"].utils = sys.modules["torchvision.utils"]
    import denoising_diffusion_pytorch

    return denoising_diffusion_pytorch


def build(channels: int, size: int):
    ddp = library()
    net = ddp.Unet(dim=SETTINGS["dim"], dim_mults=SETTINGS["dim_mults"], channels=channels)
    return ddp.GaussianDiffusion(net, image_size=size + 2 * padding(size), timesteps=1000, sampling_timesteps=20)


def train(data: str, minutes: float, run: Path, seed: int = 0) -> dict:
    """Train for ``minutes`` (reused when RUN/done.json exists); returns the run's record."""
    from tinydiff.data.datasets import load_dataset

    library()  # puts runs/peers on the path
    from ema_pytorch import EMA

    done = run / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    torch.manual_seed(seed)
    images = load_dataset(data).images  # uint8 [N, C, H, W]
    channels, size, pad = images.shape[1], images.shape[-1], padding(images.shape[-1])
    diffusion = build(channels, size)
    ema = EMA(diffusion, beta=SETTINGS["ema"], update_every=10)
    optimizer = torch.optim.Adam(diffusion.parameters(), lr=SETTINGS["lr"], betas=(0.9, 0.99))
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < 60 * minutes:
        for _ in range(SETTINGS["accumulate"]):
            batch = images[torch.randint(len(images), (SETTINGS["batch"],))].float() / 255  # its [0, 1] input
            batch = F.pad(batch, (pad,) * 4)  # background is 0 in [0, 1]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = diffusion(batch) / SETTINGS["accumulate"]
            loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        ema.update()
        steps += 1
    seconds = time.perf_counter() - start
    run.mkdir(parents=True, exist_ok=True)
    torch.save(ema.ema_model.state_dict(), run / "ema.pt")
    record = {
        "channels": channels,
        "size": size,
        "steps": steps,
        "images_per_s": steps * SETTINGS["batch"] * SETTINGS["accumulate"] / seconds,
    }
    done.write_text(json.dumps(record))
    return record


def samples(run: Path, n: int, seed: int, path: Path, chunk: int = 256) -> Path:
    """n samples of the trained peer (its DDIM, 20 steps) as a tinydiff .npz, cropped to the data's size.
    Each chunk is kept as it is drawn (PATH-partK.pt), so that a cut run resumes at its next chunk."""
    from tinydiff.viz import save_npz

    if path.exists():
        return path
    record = json.loads((run / "done.json").read_text())
    size, pad = record["size"], padding(record["size"])
    diffusion = build(record["channels"], size)
    diffusion.load_state_dict(torch.load(run / "ema.pt"))
    diffusion.eval()
    parts = []
    for k, begin in enumerate(range(0, n, chunk)):
        part = path.with_name(f"{path.stem}-part{k}.pt")
        if not part.exists():
            torch.manual_seed(seed * 1_000_003 + k)
            with torch.no_grad():
                x = diffusion.sample(batch_size=min(chunk, n - begin))  # [0, 1]
            torch.save(x[:, :, pad : pad + size, pad : pad + size] * 2 - 1, part)
        parts.append(part)
    saved = save_npz(torch.cat([torch.load(part) for part in parts]), path)
    for part in parts:
        part.unlink()
    return saved
