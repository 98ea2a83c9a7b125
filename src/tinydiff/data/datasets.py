"""Datasets as uint8 tensors in RAM: MNIST, Fashion-MNIST, digits, CIFAR-10, image folders, .npz.

Every loader returns an :class:`ImageData` holding ``images`` uint8 [N, C, H, W] and optional
``labels`` int64 [N]. Images are scaled to float [-1, 1] per batch (:meth:`ImageData.batch`),
so training never touches PIL or numpy per image.

Dataset specs (CLI and API alike): ``mnist``, ``mnist:test``, ``fashion-mnist[:split]``,
``digits``, ``cifar10:DIR[:split]`` (the official python batches), a path to an ``.npz``,
or a path to a folder of PNG/JPEG images (searched recursively).

A file that cannot be read (truncated, garbage, wrong dtype or shape, labels out of range, a
pickle that calls anything but numpy's array constructors) is a one-line TinydiffError naming it.
"""

from __future__ import annotations

import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import TinydiffError
from ..files import note
from .fetch import DATASETS, describe, fetch, safe_unpickle

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
MAX_CLASSES = 100_000  # class labels are embedding rows: a label of 10**9 would need 10**9 of them
CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


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
            if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
                raise TinydiffError(f"{self.name}: labels must be int64 [N]")
            if len(self.labels) != len(self.images):
                raise TinydiffError(f"{self.name}: {len(self.labels)} labels for {len(self.images)} images")
            low, high, limit = int(self.labels.min()), int(self.labels.max()), self.num_classes or MAX_CLASSES
            if low < 0 or high >= limit:
                raise TinydiffError(f"{self.name}: class labels must be in 0..{limit - 1}, found {low}..{high}")
            if self.num_classes is None:
                self.num_classes = high + 1

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
        """A random subset of n images (seeded), e.g. for a run on 1,500 MNIST images."""
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
    if is_emoji(spec):
        from .emoji import load_emoji

        return load_emoji(spec)
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


def is_emoji(spec: str) -> bool:
    """Whether ``spec`` names the emoji set (data/emoji.py), e.g. emoji, emoji:google@64."""
    return re.match(r"emoji($|[:@+])", str(spec)) is not None


def _load_cached(name: str, split: str) -> ImageData:
    """A fetched dataset's split, from its verified cache (fetched first if absent)."""
    if split not in ("train", "test"):
        raise TinydiffError(f"unknown split {split!r} for {name}: use train or test")
    path = fetch(name, repair=False, log=note)
    arrays = _read_npz(path, f"; run `tinydiff fetch {name} --force`")
    if f"x_{split}" not in arrays or f"y_{split}" not in arrays:
        raise TinydiffError(f"{name} has no {split} split")
    return ImageData(torch.from_numpy(arrays[f"x_{split}"]), _labels(arrays[f"y_{split}"], path), f"{name}:{split}", 10)


def _read_npz(path: Path, hint: str = "") -> dict[str, np.ndarray]:
    """Every array of an .npz file (no pickled objects); ``hint`` ends the error message."""
    try:
        loaded = np.load(path)  # allow_pickle=False: object arrays are refused
        if isinstance(loaded, np.ndarray):
            raise TinydiffError(f"cannot read {path}: a .npy array, not an .npz archive{hint}")
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except TinydiffError:
        raise
    except Exception as err:  # zipfile and numpy raise BadZipFile, zlib.error, EOFError, ValueError, ...
        raise TinydiffError(f"cannot read {path}: {describe(err)}{hint}") from None


def load_npz(path: Path) -> ImageData:
    """An .npz with ``x`` (or ``arr_0``) uint8 as NHWC, NCHW or NHW, and optional ``y`` labels [N]."""
    arrays = _read_npz(path)
    key = "x" if "x" in arrays else "arr_0" if "arr_0" in arrays else None
    if key is None:
        raise TinydiffError(f"{path}: no array named 'x' (found {', '.join(arrays) or 'none'})")
    y = arrays.get("y")
    return ImageData(to_nchw(arrays[key], str(path)), None if y is None else _labels(y, path), str(path))


def to_nchw(x: np.ndarray, what: str) -> torch.Tensor:
    """uint8 images in NHW, NHWC or NCHW layout -> uint8 tensor NCHW (1 or 3 channels)."""
    if x.dtype != np.uint8:
        raise TinydiffError(f"{what}: images must be uint8 in 0..255, got {x.dtype}")
    if x.ndim == 3:
        nchw = x[:, None]
    elif x.ndim == 4 and x.shape[1] in (1, 3):
        nchw = x
    elif x.ndim == 4 and x.shape[3] in (1, 3):
        nchw = x.transpose(0, 3, 1, 2)  # NHWC
    else:
        nchw = None
    if nchw is None or 0 in nchw.shape[2:]:
        raise TinydiffError(
            f"{what}: images of shape {tuple(x.shape)}; expected [N, H, W], [N, H, W, C] or [N, C, H, W] "
            "with C = 1 or 3 and H, W >= 1"
        )
    return torch.from_numpy(np.ascontiguousarray(nchw))


def _labels(y: np.ndarray, what) -> torch.Tensor:
    """Class labels int64 [N] from an integer array [N] in 0..MAX_CLASSES-1."""
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise TinydiffError(f"{what}: labels 'y' must be a 1-D integer array, got {y.dtype} {tuple(y.shape)}")
    if y.size and (y.min() < 0 or y.max() >= MAX_CLASSES):
        raise TinydiffError(f"{what}: labels 'y' must be in 0..{MAX_CLASSES - 1}, found {y.min()}..{y.max()}")
    return torch.from_numpy(y.astype(np.int64))


def load_folder(root: Path) -> ImageData:
    """All PNG/JPEG files under ``root`` (recursive). Grayscale if every image is, else RGB.

    If every image sits in a sub-folder of root, the sub-folder names are the class labels
    (sorted), as in the usual ImageFolder layout.
    """
    files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise TinydiffError(f"no PNG or JPEG images found under {root}")
    pictures = [_open_image(file) for file in files]
    sizes = {p.size for p in pictures}
    if len(sizes) > 1:
        first = pictures[0].size
        odd = next(f for f, p in zip(files, pictures) if p.size != first)
        raise TinydiffError(
            f"images under {root} have mixed sizes ({len(sizes)} different, e.g. {files[0].name} is "
            f"{first[0]}x{first[1]} but {odd.name} is not); resize them to one size first"
        )
    gray = all(p.mode in ("L", "1", "I", "I;16", "LA") for p in pictures)
    x = np.stack([_pixels(p, "L" if gray else "RGB", file) for file, p in zip(files, pictures)])
    relative = [f.relative_to(root) for f in files]
    labels = None
    if all(len(r.parts) > 1 for r in relative):
        classes = sorted({r.parts[0] for r in relative})
        labels = torch.tensor([classes.index(r.parts[0]) for r in relative])
    return ImageData(to_nchw(x, str(root)), labels, str(root))


def _open_image(file: Path):
    """The decoded PIL image in ``file``."""
    from PIL import Image

    try:
        with Image.open(file) as image:
            image.load()
            return image.copy()
    except Exception as err:  # PIL's decoders raise OSError, SyntaxError, ValueError, EOFError, struct.error, ...
        raise TinydiffError(f"cannot read image {file}: {describe(err)}") from None


def _pixels(image, mode: str, file: Path) -> np.ndarray:
    """uint8 [H, W] (mode L) or [H, W, 3] (mode RGB) pixels of a PIL image."""
    try:
        return np.asarray(image.convert(mode), dtype=np.uint8)
    except Exception as err:  # a mode PIL cannot convert
        raise TinydiffError(f"cannot convert image {file} ({image.mode}) to {mode}: {describe(err)}") from None


def load_cifar10(path: Path, split: str = "train") -> ImageData:
    """The official CIFAR-10 "python version": a folder of pickled batches or its .tar.gz.

    Each batch is a pickled dict with b"data" uint8 [N, 3072] (each row 3 x 32 x 32, channel-major)
    and b"labels" [N] in 0..9. Batches are read with fetch.RestrictedUnpickler: a batch that calls
    anything but numpy's array constructors is refused, and nothing in it runs.
    """
    if split not in CIFAR_BATCHES:
        raise TinydiffError(f"unknown split {split!r} for cifar10: use train or test")
    images, labels = [], []
    for what, data in _cifar_files(path, split):
        x, y = _cifar_batch(safe_unpickle(io.BytesIO(data), what), what)
        images.append(x)
        labels.append(y)
    x = np.concatenate(images).reshape(-1, 3, 32, 32)
    return ImageData(torch.from_numpy(x), torch.from_numpy(np.concatenate(labels)), f"cifar10:{split}", 10)


def _cifar_files(path: Path, split: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of the split's batch files, from a folder or a (compressed) tar archive."""
    names = CIFAR_BATCHES[split]
    try:
        if path.is_dir():
            return [(str(path / name), (path / name).read_bytes()) for name in names]
        with tarfile.open(path) as archive:
            members = {Path(m.name).name: m for m in archive.getmembers() if m.isfile()}
            missing = [name for name in names if name not in members]
            if missing:
                raise TinydiffError(f"{path} has no {missing[0]}: not the CIFAR-10 python archive")
            return [(f"{path}:{members[n].name}", archive.extractfile(members[n]).read()) for n in names]
    except TinydiffError:
        raise
    except Exception as err:  # tarfile, gzip, bz2 and lzma raise TarError, OSError, EOFError, zlib.error, ...
        raise TinydiffError(f"cannot read CIFAR-10 {split} batches from {path}: {describe(err)}") from None


def _cifar_batch(batch, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 3072] and labels int64 [N] of one unpickled CIFAR-10 batch."""
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise TinydiffError(f"{what}: not a CIFAR-10 python batch (a dict with b'data' and b'labels')")
    x, y = batch[b"data"], batch[b"labels"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise TinydiffError(f"{what}: b'data' must be a uint8 array [N, 3072]")
    y = y.tolist() if isinstance(y, np.ndarray) else y
    if not isinstance(y, list) or len(y) != len(x) or not all(_is_int(v) and 0 <= v <= 9 for v in y):
        raise TinydiffError(f"{what}: b'labels' must be a list of {len(x)} integers in 0..9")
    return x, np.array(y, dtype=np.int64)


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)
