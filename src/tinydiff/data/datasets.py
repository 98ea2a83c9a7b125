"""Datasets as uint8 tensors in RAM: MNIST, Fashion-MNIST, digits, CIFAR-10, image folders, .npz.

Every loader returns an :class:`ImageData` holding ``images`` uint8 [N, C, H, W] and optional
``labels`` int64 [N]. Images are scaled to float [-1, 1] per batch (:meth:`ImageData.batch`),
so training never touches PIL or numpy per image.

Dataset specs (CLI and API alike): ``mnist``, ``mnist:test``, ``fashion-mnist[:split]``,
``digits``, ``cifar10:DIR[:split]`` (the official python batches), a path to an ``.npz``,
or a path to a folder of PNG/JPEG images (searched recursively).
"""

from __future__ import annotations

import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import TinydiffError
from .fetch import DATASETS, fetch

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


@dataclass
class ImageData:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor | None  # int64 [N] or None
    name: str
    num_classes: int | None = None

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise TinydiffError(f"{self.name}: images must be uint8 [N, C, H, W]")
        if len(self.images) == 0:
            raise TinydiffError(f"{self.name}: the dataset is empty")
        if self.labels is not None:
            if len(self.labels) != len(self.images):
                raise TinydiffError(f"{self.name}: {len(self.labels)} labels for {len(self.images)} images")
            if self.num_classes is None:
                self.num_classes = int(self.labels.max()) + 1

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width)."""
        return tuple(self.images.shape[1:])

    def batch(self, index: torch.Tensor, device="cpu") -> torch.Tensor:
        """Images at ``index`` as float32 [B, C, H, W] in [-1, 1]."""
        return self.images[index].to(device, torch.float32) / 127.5 - 1

    def subset(self, n: int, seed: int = 0) -> ImageData:
        """A random subset of n images (seeded), e.g. seed 004's 1,500-image runs."""
        if not 0 < n <= len(self):
            raise TinydiffError(f"subset of {n} requested from {len(self)} images in {self.name}")
        index = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return self.select(index, f"{self.name}[{n}]")

    def labels_like(self, n: int) -> torch.Tensor:
        """n class labels whose counts are proportional to this dataset's (largest remainder),
        classes interleaved: what a conditional model needs to sample the data distribution p(y)
        rather than balanced classes (MNIST has 11.2 % ones and 9.0 % fives)."""
        if self.labels is None:
            raise TinydiffError(f"{self.name} has no labels")
        share = torch.bincount(self.labels, minlength=self.num_classes).double() * n / len(self)
        counts = share.floor().long()
        counts[torch.argsort(share - counts, descending=True)[: n - int(counts.sum())]] += 1
        # interleave: class c's k-th label sits at (k + 1/2) / counts[c] of the sequence
        labels = torch.arange(self.num_classes).repeat_interleave(counts)
        position = torch.cat([(torch.arange(int(c)) + 0.5) / c for c in counts if c > 0])
        return labels[torch.argsort(position, stable=True)]

    def select(self, index: torch.Tensor, name: str) -> ImageData:
        """The images (and labels) at ``index``."""
        labels = None if self.labels is None else self.labels[index]
        return ImageData(self.images[index], labels, name, self.num_classes)


def load_dataset(spec: str, split: str = "train") -> ImageData:
    """Load a dataset spec (see the module docstring) as uint8 tensors."""
    name, _, rest = str(spec).partition(":")
    if name in DATASETS:
        return _load_cached(name, rest or split)
    if name == "cifar10":
        directory, _, cifar_split = rest.partition(":")
        if not directory:
            raise TinydiffError("cifar10 needs a directory: cifar10:PATH[:train|test]")
        return load_cifar10(Path(directory), cifar_split or split)
    path = Path(spec)
    if path.suffix == ".npz":
        return load_npz(path)
    if path.is_dir():
        return load_folder(path)
    if not path.exists():
        raise TinydiffError(
            f"dataset {spec!r} not found: give {', '.join(DATASETS)}, cifar10:DIR, an .npz or an image folder"
        )
    raise TinydiffError(f"cannot read {spec!r}: not an .npz file or a folder of images")


def _load_cached(name: str, split: str) -> ImageData:
    if split not in ("train", "test"):
        raise TinydiffError(f"unknown split {split!r} for {name}: use train or test")
    with np.load(fetch(name, log=lambda msg: print(msg, flush=True))) as arrays:
        if f"x_{split}" not in arrays:
            raise TinydiffError(f"{name} has no {split} split")
        images = torch.from_numpy(arrays[f"x_{split}"].copy())
        labels = torch.from_numpy(arrays[f"y_{split}"].astype(np.int64))
    return ImageData(images, labels, f"{name}:{split}", 10)


def load_npz(path: Path) -> ImageData:
    """An .npz with ``x`` (or ``arr_0``) uint8 as NHWC, NCHW or NHW, and optional ``y`` labels."""
    try:
        arrays = np.load(path)
    except (OSError, ValueError) as err:
        raise TinydiffError(f"cannot read {path}: {err}") from None
    with arrays:
        key = "x" if "x" in arrays else "arr_0" if "arr_0" in arrays else None
        if key is None:
            raise TinydiffError(f"{path}: no array named 'x' (found {', '.join(arrays.files) or 'none'})")
        x = arrays[key]
        y = arrays["y"] if "y" in arrays else None
    return ImageData(to_nchw(x, str(path)), None if y is None else _labels(y, path), str(path))


def to_nchw(x: np.ndarray, what: str) -> torch.Tensor:
    """uint8 images in NHW, NHWC or NCHW layout -> uint8 tensor NCHW (1 or 3 channels)."""
    if x.dtype != np.uint8:
        raise TinydiffError(f"{what}: images must be uint8 in 0..255, got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] in (1, 3):
        pass  # NCHW
    elif x.ndim == 4 and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)  # NHWC
    else:
        raise TinydiffError(
            f"{what}: images of shape {tuple(x.shape)}; expected [N, H, W], [N, H, W, C] or [N, C, H, W] "
            "with C = 1 or 3"
        )
    return torch.from_numpy(np.ascontiguousarray(x))


def _labels(y: np.ndarray, what) -> torch.Tensor:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
        raise TinydiffError(f"{what}: labels 'y' must be a 1-D array of non-negative integers")
    return torch.from_numpy(y.astype(np.int64))


def load_folder(root: Path) -> ImageData:
    """All PNG/JPEG files under ``root`` (recursive). Grayscale if every image is, else RGB.

    If every image sits in a sub-folder of root, the sub-folder names are the class labels
    (sorted), as in the usual ImageFolder layout.
    """
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise TinydiffError(f"no PNG or JPEG images found under {root}")
    pictures = []
    for file in files:
        try:
            with Image.open(file) as image:
                image.load()
                pictures.append(image.copy())
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise TinydiffError(f"cannot read image {file}: {err}") from None
    sizes = {p.size for p in pictures}
    if len(sizes) > 1:
        first = pictures[0].size
        odd = next(f for f, p in zip(files, pictures) if p.size != first)
        raise TinydiffError(
            f"images under {root} have mixed sizes ({len(sizes)} different, e.g. {files[0].name} is "
            f"{first[0]}x{first[1]} but {odd.name} is not); resize them to one size first"
        )
    gray = all(p.mode in ("L", "1", "I", "I;16", "LA") for p in pictures)
    mode = "L" if gray else "RGB"
    x = np.stack([np.asarray(p.convert(mode), dtype=np.uint8) for p in pictures])
    relative = [f.relative_to(root) for f in files]
    labels = None
    if all(len(r.parts) > 1 for r in relative):
        classes = sorted({r.parts[0] for r in relative})
        labels = torch.tensor([classes.index(r.parts[0]) for r in relative])
    return ImageData(to_nchw(x, str(root)), labels, str(root))


def load_cifar10(path: Path, split: str = "train") -> ImageData:
    """The official CIFAR-10 "python version": a folder of pickled batches or its .tar.gz."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    if split not in ("train", "test"):
        raise TinydiffError(f"unknown split {split!r} for cifar10: use train or test")
    batches = []
    try:
        if path.is_file():
            with tarfile.open(path) as archive:
                members = {Path(m.name).name: m for m in archive.getmembers()}
                for name in names:
                    batches.append(pickle.load(archive.extractfile(members[name]), encoding="bytes"))
        else:
            for name in names:
                with open(path / name, "rb") as handle:
                    batches.append(pickle.load(handle, encoding="bytes"))
    except (OSError, KeyError, pickle.UnpicklingError, tarfile.TarError) as err:
        raise TinydiffError(f"cannot read CIFAR-10 {split} batches from {path}: {err}") from None
    x = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches]).reshape(-1, 3, 32, 32)
    y = np.concatenate([np.asarray(b[b"labels"]) for b in batches])
    return ImageData(torch.from_numpy(x), _labels(y, path), f"cifar10:{split}", 10)
