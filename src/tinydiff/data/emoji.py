"""Emoji: a real RGB image set that reaches machines without internet through the npm registry.

The npm packages emoji-datasource-google and emoji-datasource-twitter ship every emoji as a 64x64
RGBA PNG, with emoji.json giving each one's category. tinydiff reads the PNGs straight from the
package tarball (``npm pack``, or the registry's tarball URL where the web is reachable), verified by
its sha256, and caches them per style as ``emoji-STYLE.npz``: RGBA uint8 [N, 4, 64, 64], the
category y and the split. Skin-tone variants are kept (3,786 images per style), with their emoji's
category. Every tenth emoji in the packages' sort order (with its variants) is held out as the test
split. The Component entries (skin-tone swatches, hair parts) are left out: 9 categories remain.

Spec: ``emoji[:google|twitter][:train|test][@32|@64][+white|black]``: both styles by default, the
training split, 32x32, alpha composited onto white. Licences: the Google (Noto) images are
Apache-2.0, the Twitter (Twemoji) images CC-BY 4.0 (Twitter, Inc. and other contributors). The
Apple and Facebook sets are not licensed for reuse and are never used.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import TinydiffError
from ..files import cache_dir, download, needs_fetch, note, store_arrays, verify

VERSION = "16.0.0"
PACKAGES = {  # style -> (npm package, sha256 of its tarball)
    "google": ("emoji-datasource-google", "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438"),
    "twitter": ("emoji-datasource-twitter", "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877"),
}
CATEGORIES = (
    "Smileys & Emotion",
    "People & Body",
    "Animals & Nature",
    "Food & Drink",
    "Travel & Places",
    "Activities",
    "Objects",
    "Symbols",
    "Flags",
)
SIZES = (32, 64)
BACKGROUNDS = {"white": 255, "black": 0}
HELD_OUT_EVERY = 10  # every tenth emoji (and its skin-tone variants) is the test split


def tarball(style: str, log=print) -> bytes:
    """The package tarball of ``style``, verified: from the registry's URL, else with ``npm pack``."""
    package, expected = PACKAGES[style]
    url = f"https://registry.npmjs.org/{package}/-/{package}-{VERSION}.tgz"
    try:
        data = download(url)
    except OSError:
        log(f"fetching {package}@{VERSION} with npm pack (the tarball only; nothing is installed)")
        with tempfile.TemporaryDirectory() as folder:
            try:
                subprocess.run(
                    ["npm", "pack", f"{package}@{VERSION}", "--pack-destination", folder],
                    check=True,
                    capture_output=True,
                )
            except (OSError, subprocess.CalledProcessError) as err:
                raise TinydiffError(
                    f"cannot fetch the {style} emoji: the registry is unreachable and npm pack failed ({err})"
                ) from None
            data = next(Path(folder).glob("*.tgz")).read_bytes()
    return verify(data, expected, f"{package}-{VERSION}.tgz")


def read_tarball(data: bytes, style: str) -> dict[str, np.ndarray]:
    """The images of a package tarball: x RGBA uint8 [N, 4, 64, 64], y the category, test 1 for the
    held-out split, in emoji.json's order (variants after their emoji)."""
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        entries = json.load(archive.extractfile("package/emoji.json"))
        members = {m.name: m for m in archive.getmembers() if m.isfile()}
        entries = sorted((e for e in entries if e["category"] in CATEGORIES), key=lambda e: e["sort_order"])
        images, labels, test = [], [], []
        for rank, entry in enumerate(entries):
            variants = [entry, *(entry.get("skin_variations") or {}).values()]
            for variant in variants:
                member = members.get(f"package/img/{style}/64/{variant['image']}")
                if member is None or not variant.get(f"has_img_{style}", True):
                    continue
                with Image.open(archive.extractfile(member)) as picture:
                    rgba = np.asarray(picture.convert("RGBA").resize((64, 64), Image.LANCZOS))
                images.append(rgba.transpose(2, 0, 1))
                labels.append(CATEGORIES.index(entry["category"]))
                test.append(rank % HELD_OUT_EVERY == HELD_OUT_EVERY - 1)
    return {"x": np.stack(images), "y": np.array(labels, np.int64), "test": np.array(test, np.uint8)}


def fetch_emoji(style: str, *, force: bool = False, repair: bool = True, log=print) -> Path:
    """Make sure the emoji of ``style`` are cached and intact; the path of emoji-STYLE.npz."""
    path = cache_dir() / f"emoji-{style}.npz"
    command = "tinydiff fetch emoji --force"
    if not needs_fetch(path, None, force=force, repair=repair, command=command, readable=_readable, log=log):
        return path
    arrays = read_tarball(tarball(style, log), style)
    store_arrays(path, arrays, compressed=True)
    log(f"cached {style} emoji: {len(arrays['x'])} images ({int(arrays['test'].sum())} held out) -> {path}")
    return path


def _readable(path: Path) -> bool:
    try:
        with np.load(path) as arrays:
            return {"x", "y", "test"} <= set(arrays.files) and arrays["x"].ndim == 4
    except Exception:  # truncated, not an .npz
        return False


def parse(spec: str) -> tuple[list[str], str, int, str]:
    """(styles, split, size, background) of an emoji spec; a TinydiffError naming what is wrong."""
    match = re.fullmatch(r"emoji((?::[a-z]+)*)(?:@(\d+))?(?:\+([a-z]+))?((?::[a-z]+)*)", str(spec))
    if match is None:
        raise TinydiffError(
            f"cannot read the dataset {spec!r}: emoji[:google|twitter][:train|test][@32|@64][+white|black]"
        )
    parts = [p for p in (match.group(1) + match.group(4)).split(":") if p]
    styles = [p for p in parts if p in PACKAGES] or list(PACKAGES)
    splits = [p for p in parts if p in ("train", "test")] or ["train"]
    unknown = [p for p in parts if p not in PACKAGES and p not in ("train", "test")]
    size, background = int(match.group(2) or 32), match.group(3) or "white"
    if unknown or len(splits) > 1 or size not in SIZES or background not in BACKGROUNDS:
        raise TinydiffError(
            f"cannot read the dataset {spec!r}: styles google, twitter; splits train, test; sizes "
            f"{', '.join(map(str, SIZES))}; backgrounds {', '.join(BACKGROUNDS)}"
        )
    return styles, splits[0], size, background


def load_emoji(spec: str):
    """The emoji of a spec as ImageData: RGB uint8 [N, 3, size, size], the category as the label."""
    from .datasets import ImageData, _read_npz

    styles, split, size, background = parse(spec)
    images, labels = [], []
    for style in styles:
        path = fetch_emoji(style, repair=False, log=note)
        arrays = _read_npz(path, "; run `tinydiff fetch emoji --force`")
        keep = arrays["test"] == (split == "test")
        images.append(composite(arrays["x"][keep], BACKGROUNDS[background], size))
        labels.append(arrays["y"][keep])
    x, y = np.concatenate(images), np.concatenate(labels)
    return ImageData(torch.from_numpy(x), torch.from_numpy(y), str(spec), len(CATEGORIES))


def composite(rgba: np.ndarray, background: int, size: int) -> np.ndarray:
    """RGBA uint8 [N, 4, 64, 64] over a flat background -> RGB uint8 [N, 3, size, size] (LANCZOS)."""
    alpha = rgba[:, 3:].astype(np.float32) / 255
    rgb = rgba[:, :3].astype(np.float32) * alpha + background * (1 - alpha)
    rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    if size == rgb.shape[-1]:
        return rgb
    resized = [np.asarray(Image.fromarray(im.transpose(1, 2, 0)).resize((size, size), Image.LANCZOS)) for im in rgb]
    return np.stack(resized).transpose(0, 3, 1, 2).copy()
