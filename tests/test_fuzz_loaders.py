"""Fuzzing the dataset loaders with hypothesis: whatever a PNG folder, an .npz, an IDX file or a
CIFAR-10 batch holds (random bytes, a truncated or altered valid file, arrays and objects of the
wrong types), loading it gives uint8 images [N, C, H, W] with int64 labels [N], or raises one
TinydiffError line naming the file: never another exception, never a hang.

Each loader gets EXAMPLES[loader] cases, derandomized so that every run tries the same ones
(TOTAL_EXAMPLES in all); TINYDIFF_FUZZ_SCALE=k multiplies them for a deeper search. The number
of cases actually run is printed at the end of the module.
"""

import contextlib
import gzip
import io
import os
import pickle
import signal
import struct
import tarfile
import tempfile
import zlib
from collections import Counter
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tinydiff.data import ImageData, load_dataset
from tinydiff.data.datasets import MAX_CLASSES
from tinydiff.data.fetch import read_idx
from tinydiff.errors import TinydiffError

SCALE = int(os.environ.get("TINYDIFF_FUZZ_SCALE", "1"))
EXAMPLES = {"npz": 400, "png": 300, "idx": 400, "cifar10": 400, "cifar10.tar.gz": 200}
TOTAL_EXAMPLES = SCALE * sum(EXAMPLES.values())
TIME_LIMIT_S = 10  # one load of these small files takes milliseconds: longer is a hang
RUN = Counter()


def fuzz(loader: str) -> settings:
    """Hypothesis settings for ``loader``'s cases: its share of EXAMPLES, the same cases every run."""
    return settings(max_examples=SCALE * EXAMPLES[loader], deadline=None, derandomize=True, database=None)


@pytest.fixture(scope="module", autouse=True)
def _report_case_count(request):
    yield
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is not None and reporter is not None and RUN:
        cases = ", ".join(f"{loader} {n}" for loader, n in RUN.items())
        with capture.global_and_fixture_disabled():
            reporter.write_line(f"\ntest_fuzz_loaders: {sum(RUN.values())} cases ({cases})")


class Hang(BaseException):
    """Raised by the alarm; a BaseException so that no loader's error handling can catch it."""


@contextlib.contextmanager
def time_limit(seconds: float):
    def alarm(signum, frame):
        raise Hang(f"no result after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_load(loader: str, load, path: Path):
    """``load(path)``'s result, or None after a one-line TinydiffError naming ``path``."""
    RUN[loader] += 1
    try:
        with time_limit(TIME_LIMIT_S):
            result = load(path)
    except TinydiffError as err:
        message = str(err)
        assert "\n" not in message and path.name in message, message
        return None
    if isinstance(result, ImageData):
        assert result.images.dtype == torch.uint8 and result.images.ndim == 4
        assert result.images.shape[1] in (1, 3) and min(result.images.shape) >= 1
        if result.labels is not None:
            assert result.labels.ndim == 1 and len(result.labels) == len(result.images)
            assert 0 <= int(result.labels.min()) <= int(result.labels.max()) < MAX_CLASSES
    return result


def variants(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, truncations of ``valid``, and ``valid`` with up to 4 bytes changed."""

    def edit(changes: list[tuple[int, int]]) -> bytes:
        data = bytearray(valid)
        for position, value in changes:
            data[position % len(data)] = value
        return bytes(data)

    return st.one_of(
        st.binary(max_size=2 * len(valid)),
        st.integers(0, len(valid)).map(lambda k: valid[:k]),
        st.lists(st.tuples(st.integers(0, len(valid)), st.integers(0, 255)), min_size=1, max_size=4).map(edit),
    )


DTYPES = st.sampled_from([np.uint8, np.int8, np.int64, np.uint64, ">i4", np.float32, np.bool_, "U2", "S1"])
SHAPES = hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4)
ARRAYS = hnp.arrays(DTYPES, SHAPES)
UINT8_IMAGES = hnp.arrays(np.uint8, st.sampled_from([(2, 4, 4), (2, 3, 4, 4), (2, 4, 4, 1), (0, 4, 4), (2, 1, 0, 4)]))
LABELS = hnp.arrays(st.sampled_from([np.int64, np.uint64, np.int8]), st.sampled_from([(2,), (3,), (2, 1)]))


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


VALID_NPZ = _npz(x=np.arange(2 * 16, dtype=np.uint8).reshape(2, 4, 4), y=np.array([0, 1]))
NPZ_ARRAYS = st.dictionaries(
    st.sampled_from(["x", "arr_0", "y", "images"]), st.one_of(ARRAYS, UINT8_IMAGES, LABELS), max_size=3
)


@fuzz("npz")
@given(data=st.one_of(variants(VALID_NPZ), NPZ_ARRAYS.map(lambda arrays: _npz(**arrays))))
def test_npz_loader(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.npz"
        path.write_bytes(data)
        check_load("npz", lambda p: load_dataset(str(p)), path)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


VALID_PNG = _png(Image.fromarray(np.arange(16, dtype=np.uint8).reshape(4, 4) * 16, "L"))


def _png_header(size: tuple[int, int]) -> bytes:
    """A PNG with a valid 8-bit grayscale header of width x height and no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", *size, 8, 0, 0, 0, 0)) + chunk(b"IEND", b"")


NAMES = ["a.png", "b.jpg", "cat/c.png", "dog/d.jpeg"]  # sub-folders become class labels
PNG_HEADERS = st.sampled_from([(0, 4), (4, 0), (4, 4), (20000, 20000), (2**31 - 1, 1)]).map(_png_header)
PNG_IMAGES = st.builds(
    lambda mode, w, h: _png(Image.new(mode, (w, h))),
    st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "I;16"]),
    st.integers(1, 5),
    st.integers(1, 5),
)


@fuzz("png")
@given(
    files=st.lists(
        st.tuples(st.sampled_from(NAMES), variants(VALID_PNG) | PNG_IMAGES | PNG_HEADERS),
        min_size=1,
        max_size=3,
    )
)
def test_image_folder_loader(files):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "images"
        for name, data in files:
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        check_load("png", lambda p: load_dataset(str(p)), root)  # every message names a file under root, or root


def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + np.array(array.shape, ">u4").tobytes() + array.astype(np.uint8).tobytes()


VALID_IDX = _idx(np.arange(3 * 4 * 4).reshape(3, 4, 4))
IDX_ARRAYS = hnp.arrays(np.uint8, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)).map(_idx)


@fuzz("idx")
@given(data=st.one_of(variants(VALID_IDX), IDX_ARRAYS), gzipped=st.booleans())
def test_idx_reader(data, gzipped):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz-idx3-ubyte.gz"
        path.write_bytes(gzip.compress(data) if gzipped else data)
        array = check_load("idx", read_idx, path)
        assert array is None or array.dtype == np.uint8


def _tar_gz(batch: bytes) -> bytes:
    """A .tar.gz holding cifar-10-batches-py/test_batch, the same bytes on every run."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        member = tarfile.TarInfo("cifar-10-batches-py/test_batch")
        member.size = len(batch)
        archive.addfile(member, io.BytesIO(batch))
    return gzip.compress(buffer.getvalue(), mtime=0)


VALID_BATCH = pickle.dumps({b"data": np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072), b"labels": [3, 9]})
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2, 12), st.floats(), st.binary(max_size=4), st.text(max_size=4), ARRAYS
)
OBJECTS = st.recursive(
    VALUES,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from([b"data", b"labels", "data", b"filenames"]), children, max_size=3)
    ),
    max_leaves=6,
)
BATCHES = st.fixed_dictionaries(
    {
        b"data": st.one_of(hnp.arrays(np.uint8, st.sampled_from([(2, 3072), (1, 3072), (2, 100)])), ARRAYS),
        b"labels": st.one_of(st.lists(st.integers(-1, 10), max_size=3), LABELS, VALUES),
    }
)
CIFAR_PICKLES = st.builds(pickle.dumps, st.one_of(OBJECTS, BATCHES), st.sampled_from([2, 4, 5]))


@fuzz("cifar10")
@given(data=st.one_of(variants(VALID_BATCH), CIFAR_PICKLES), archived=st.booleans())
def test_cifar10_loader(data, archived):
    """The test split of a folder holding test_batch, or of a .tar.gz holding it."""
    with tempfile.TemporaryDirectory() as tmp:
        if archived:
            path = Path(tmp) / "cifar.tar.gz"
            path.write_bytes(_tar_gz(data))
        else:
            path = Path(tmp) / "cifar"
            path.mkdir()
            (path / "test_batch").write_bytes(data)
        check_load("cifar10", lambda p: load_dataset(f"cifar10:{p}:test"), path)


@fuzz("cifar10.tar.gz")
@given(data=variants(_tar_gz(VALID_BATCH)))
def test_cifar10_archive_bytes(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cifar.tar.gz"
        path.write_bytes(data)
        check_load("cifar10.tar.gz", lambda p: load_dataset(f"cifar10:{p}:test"), path)
