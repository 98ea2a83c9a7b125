import gzip
import hashlib
import pickle
import struct
import tarfile

import numpy as np
import pytest
import torch
from helpers import digit_like_images
from PIL import Image

from tinydiff.data import ImageData, datasets, fetch, load_dataset
from tinydiff.errors import TinydiffError


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file exactly as the MNIST database writes it."""
    magic = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    return magic + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()


def test_idx_round_trip_plain_and_gzipped(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    (tmp_path / "a-idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "a-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
    assert np.array_equal(fetch.read_idx(tmp_path / "a-idx3-ubyte"), images)
    assert np.array_equal(fetch.read_idx(tmp_path / "a-idx3-ubyte.gz"), images)


def test_idx_errors():
    with pytest.raises(TinydiffError, match="magic"):
        fetch.parse_idx(b"\x89PNG....")
    with pytest.raises(TinydiffError, match="truncated"):
        fetch.parse_idx(idx_bytes(np.zeros((3, 4, 4)))[:-5])


def test_mnist_pickle_converts_losslessly_to_idx():
    """The PyPI route's pickle stores pixel / 256 as float32; the IDX files must come back exactly."""
    rng = np.random.default_rng(1)
    parts = [(rng.integers(0, 256, (n, 784)), rng.integers(0, 10, n)) for n in (6, 3, 4)]
    member = gzip.compress(pickle.dumps(tuple((x.astype(np.float32) / 256, y) for x, y in parts)))
    files = fetch.mnist_pickle_to_idx(member)
    arrays = fetch._idx_arrays(files)
    assert np.array_equal(arrays["x_train"].reshape(9, 784), np.concatenate([parts[0][0], parts[1][0]]))
    assert np.array_equal(arrays["y_test"], parts[2][1])
    assert arrays["x_train"].shape == (9, 1, 28, 28)


def test_digits_csv_format():
    rows = np.concatenate([np.random.default_rng(2).integers(0, 17, (4, 64)), [[0], [1], [2], [9]]], axis=1)
    arrays = fetch.digits_csv_to_arrays(gzip.compress("\n".join(",".join(map(str, r)) for r in rows).encode()))
    assert arrays["x_train"].shape == (4, 1, 8, 8) and arrays["x_train"].dtype == np.uint8
    assert arrays["y_train"].tolist() == [0, 1, 2, 9]
    assert arrays["x_train"].reshape(4, 64)[rows[:, :64] == 16].min() == 255


def test_fashion_mnist_offline_route_verifies_and_caches(tmp_path, monkeypatch):
    """The Debian-package route: real IDX .gz files, checked by the sha256 of their content."""
    folder = tmp_path / "fashion"
    folder.mkdir()
    rng = np.random.default_rng(3)
    files, sums = {}, {}
    for split, n in (("train", 7), ("t10k", 3)):
        files[f"{split}-images-idx3-ubyte"] = idx_bytes(rng.integers(0, 256, (n, 28, 28)))
        files[f"{split}-labels-idx1-ubyte"] = idx_bytes(rng.integers(0, 10, n))
    for stem, data in files.items():
        (folder / f"{stem}.gz").write_bytes(gzip.compress(data))
        sums[stem] = hashlib.sha256(data).hexdigest()
    monkeypatch.setattr(fetch, "_try_web_idx", lambda name, log: None)
    monkeypatch.setattr(fetch, "FASHION_DEBIAN", ("dataset-fashion-mnist", folder))
    monkeypatch.setitem(fetch.IDX_SHA256, "fashion-mnist", sums)
    data = load_dataset("fashion-mnist:test")
    assert data.images.shape == (3, 1, 28, 28) and data.labels.shape == (3,)
    assert (tmp_path / "cache" / "fashion-mnist.npz").exists()
    # a corrupted file is refused, and nothing is cached
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x01\x05"))
    with pytest.raises(TinydiffError, match="checksum mismatch"):
        fetch.fetch("fashion-mnist", force=True, log=lambda m: None)


def test_npz_layouts_all_load_the_same(tmp_path):
    x = digit_like_images(6)  # NCHW
    np.savez(tmp_path / "nchw.npz", x=x, y=np.arange(6))
    np.savez(tmp_path / "nhwc.npz", x=x.transpose(0, 2, 3, 1))
    np.savez(tmp_path / "nhw.npz", arr_0=x[:, 0])
    for name in ("nchw", "nhwc", "nhw"):
        assert torch.equal(load_dataset(str(tmp_path / f"{name}.npz")).images, torch.from_numpy(x))
    assert load_dataset(str(tmp_path / "nchw.npz")).labels.tolist() == list(range(6))


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "cube.npz", x=np.zeros((2, 5, 5, 5), dtype=np.uint8))
    np.savez(tmp_path / "float.npz", x=np.zeros((2, 8, 8), dtype=np.float32))
    np.savez(tmp_path / "nox.npz", images=np.zeros((2, 8, 8), dtype=np.uint8))
    np.savez(tmp_path / "badlabels.npz", x=np.zeros((2, 8, 8), dtype=np.uint8), y=np.array([1, 2, 3]))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    for name, message in [
        ("cube", "expected"),
        ("float", "uint8"),
        ("nox", "no array named 'x'"),
        ("badlabels", "3 labels for 2 images"),
        ("junk", "cannot read"),
    ]:
        with pytest.raises(TinydiffError, match=message):
            load_dataset(str(tmp_path / f"{name}.npz"))


def _save(path, array, mode):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode).save(path)


def test_image_folder_recursive_grayscale_and_labels(tmp_path):
    x = digit_like_images(4)
    for i in range(4):
        _save(tmp_path / f"class{i % 2}" / "deep" / f"{i}.png", x[i, 0], "L")
    data = load_dataset(str(tmp_path))
    assert data.images.shape == (4, 1, 8, 8)
    assert sorted(data.labels.tolist()) == [0, 0, 1, 1]
    assert {bytes(img.numpy()) for img in data.images} == {bytes(img) for img in x}


def test_image_folder_mixed_modes_become_rgb(tmp_path):
    _save(tmp_path / "a.png", np.zeros((8, 8), np.uint8), "L")
    _save(tmp_path / "b.jpg", np.full((8, 8, 3), 200, np.uint8), "RGB")
    data = load_dataset(str(tmp_path))
    assert data.images.shape == (2, 3, 8, 8) and data.labels is None


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TinydiffError, match="no PNG or JPEG"):
        load_dataset(str(tmp_path / "empty"))
    _save(tmp_path / "mixed" / "a.png", np.zeros((8, 8), np.uint8), "L")
    _save(tmp_path / "mixed" / "b.png", np.zeros((9, 8), np.uint8), "L")
    with pytest.raises(TinydiffError, match="mixed sizes"):
        load_dataset(str(tmp_path / "mixed"))
    _save(tmp_path / "corrupt" / "good.png", np.zeros((8, 8), np.uint8), "L")
    (tmp_path / "corrupt" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(TinydiffError, match="bad.png"):
        load_dataset(str(tmp_path / "corrupt"))
    with pytest.raises(TinydiffError, match="not found"):
        load_dataset(str(tmp_path / "nowhere"))


def test_cifar10_python_batches_folder_and_archive(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(4)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), b"labels": [1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch))
    train = load_dataset(f"cifar10:{folder}")
    assert train.images.shape == (15, 3, 32, 32) and train.num_classes == 10
    with tarfile.open(tmp_path / "cifar.tar.gz", "w:gz") as archive:
        archive.add(folder, arcname="cifar-10-batches-py")
    test = datasets.load_cifar10(tmp_path / "cifar.tar.gz", "test")
    assert test.labels.tolist() == [1, 2, 3]
    with pytest.raises(TinydiffError, match="cannot read CIFAR-10"):
        load_dataset(f"cifar10:{tmp_path / 'missing'}")


def test_batches_are_scaled_and_subsets_seeded(tmp_path):
    np.savez(tmp_path / "d.npz", x=digit_like_images(50))
    data = load_dataset(str(tmp_path / "d.npz"))
    batch = data.batch(torch.arange(10))
    assert batch.dtype == torch.float32 and batch.min() == -1 and batch.max() == 1
    a, b = data.subset(20, seed=1), data.subset(20, seed=1)
    assert len(a) == 20 and torch.equal(a.images, b.images)
    with pytest.raises(TinydiffError, match="subset"):
        data.subset(51)


def test_labels_like_follows_the_class_proportions():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 15 + [3] * 5)
    data = ImageData(torch.zeros(100, 1, 2, 2, dtype=torch.uint8), labels, "skewed")
    drawn = data.labels_like(40)
    assert torch.bincount(drawn, minlength=4).tolist() == [20, 12, 6, 2]
    assert torch.bincount(drawn[:20], minlength=4).tolist() == [10, 6, 3, 1]  # interleaved, not sorted
    # largest remainder: 7 x (0.5, 0.3, 0.15, 0.05) = (3.5, 2.1, 1.05, 0.35) -> 3 + 2 + 1 + 1 (0.5 first)
    assert torch.bincount(data.labels_like(7), minlength=4).tolist() == [4, 2, 1, 0]
    assert len(data.labels_like(1)) == 1 and data.labels_like(1).item() == 0
    with pytest.raises(TinydiffError, match="no labels"):
        ImageData(data.images, None, "plain").labels_like(3)


@pytest.mark.slow
def test_real_mnist_fetch_through_the_offline_route():
    data = load_dataset("mnist")
    assert data.images.shape == (60000, 1, 28, 28)
    assert data.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert load_dataset("mnist:test").labels[:5].tolist() == [7, 2, 1, 0, 4]
