"""Inception features of image sets, with real-data features cached on disk.

A dataset spec (``mnist:train``) is sampled as disjoint draws: one seeded permutation of the
whole set, draw k being its k-th block of n images. Draw 0 is what scores are computed
against; draw 1 gives the real-vs-real floor at the same n. Cached features live in
``$TINYDIFF_CACHE/features/`` under a key naming the dataset, split, n, draw, preprocessing
and the weights' hash, so they are never computed twice and never confused.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import torch

from ..data import ImageData, load_dataset
from ..data.datasets import is_emoji
from ..data.fetch import DATASETS
from ..errors import TinydiffError
from ..files import cache_dir, check_cache, store
from .classifier import accuracy, class_probabilities, classifier_name, inception_score, load_classifier
from .inception import PREPROCESSING, InceptionFeatures


def is_dataset_spec(spec: str) -> bool:
    return str(spec).partition(":")[0] in DATASETS or is_emoji(spec)


def canonical_spec(spec: str) -> str:
    if is_emoji(spec):
        return str(spec) if re.search(r":(train|test)", str(spec)) else f"{spec}:train"
    name, _, split = str(spec).partition(":")
    return f"{name}:{split or 'train'}"


def draw(data: ImageData, n: int, index: int, seed: int = 0) -> ImageData:
    """The ``index``-th disjoint draw of n from data (a seeded permutation)."""
    if (index + 1) * n > len(data):
        raise TinydiffError(f"{data.name} has {len(data)} images: too few for draw {index + 1} of n = {n}")
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return data.select(order[index * n : (index + 1) * n], f"{data.name}[draw {index} of {n}]")


def labelled_draw(spec: str, n: int, index: int = 0) -> ImageData:
    """Draw ``index`` of n from a dataset spec, an .npz or a folder."""
    return draw(load_dataset(canonical_spec(spec) if is_dataset_spec(spec) else str(spec)), n, index)


def images_of(spec: str, n: int, index: int = 0) -> torch.Tensor:
    """uint8 images of draw ``index`` of n from a dataset spec, an .npz or a folder."""
    return labelled_draw(spec, n, index).images


def features(
    spec: str, n: int, extractor: InceptionFeatures, index: int = 0, log=print, progress: bool = True
) -> np.ndarray:
    """Features [n, 2048] of draw ``index`` of an image set (dataset spec, .npz or folder).

    Dataset specs are cached, and the cache is checked against the sha256 recorded when it was
    written (a corrupt one is computed again); files (e.g. generated samples) are computed every time.
    """
    dataset = is_dataset_spec(spec)
    spec = canonical_spec(spec) if dataset else str(spec)
    key = f"{spec.replace(':', '-')}-n{n}-draw{index}-{PREPROCESSING}-{extractor.weights_hash}"
    path = cache_dir() / "features" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', key)}.npy"
    state = check_cache(path, readable=_readable_features) if dataset else "missing"
    if state == "ok":
        return np.load(path).astype(np.float64)
    if state == "corrupt":
        log(f"the cached features {path} are corrupt; computing them again")
    images = images_of(spec, n, index)
    log(f"computing Inception features of {spec} (n = {n}, draw {index})")
    result = extractor(images, progress=progress)
    if dataset:
        buffer = io.BytesIO()
        np.save(buffer, result.astype(np.float32))  # the network's outputs are float32: lossless
        store(path, buffer.getvalue())
    return result


def _readable_features(path) -> bool:
    """Whether ``path`` holds a features array [n, D] (a cache written before caches had records)."""
    try:
        return np.load(path).ndim == 2
    except Exception:  # truncated or not an .npy
        return False


def score(
    spec_a: str,
    spec_b: str,
    n: int,
    metrics,
    extractor: InceptionFeatures | None,
    floor: bool = True,
    log=print,
    draws: int = 1,
    progress: bool = True,
) -> dict:
    """Metrics of image set A against reference B at n images each, with B's real-vs-real floor
    (draw 0 vs draw 1 of B) beside every figure.

    draws: score K disjoint draws of n images of A (A must hold K n images) and report each metric's
    mean, its values per draw (``fid_draws``) and their standard deviation (``fid_spread``): how much
    the figure moves with the sample, which one draw cannot show.
    """
    from . import compare

    if type(n) is not int or n < 2:  # a covariance needs two images
        raise TinydiffError(f"the number of images per set must be an integer >= 2, got {n!r}")
    if type(draws) is not int or draws < 1:
        raise TinydiffError(f"the number of draws must be an integer >= 1, got {draws!r}")
    for spec in (spec_a, spec_b):  # before any features are computed
        if ":" not in str(spec) and not is_dataset_spec(spec) and not Path(spec).exists():
            raise TinydiffError(f"{spec} does not exist (expected an .npz, an image folder or a dataset such as mnist)")
    same = str(spec_a) == str(spec_b)
    first_a = 1 if same else 0
    feature_metrics = [m for m in metrics if m not in ("is", "acc")]
    report = {"a": str(spec_a), "b": str(spec_b), "n": n}
    name = classifier_name(spec_b) if is_dataset_spec(spec_b) else None
    if ("is" in metrics or "acc" in metrics) and name is None:
        raise TinydiffError("the 'is' and 'acc' metrics need a dataset spec (e.g. mnist) as the reference")
    classifier = load_classifier(name) if "is" in metrics or "acc" in metrics else None
    if feature_metrics:
        report.update({"weights": extractor.weights_hash, "preprocessing": PREPROCESSING})
        b = features(spec_b, n, extractor, index=0, log=log, progress=progress)
    rows, a = [], None
    for k in range(draws):
        row = {}
        if feature_metrics:  # Inception-feature metrics (the classifier metrics need no extractor)
            a = features(spec_a, n, extractor, index=first_a + k, log=log, progress=progress)
            row.update(compare(a, b, feature_metrics))
        if classifier is not None:  # the classifier of the reference dataset, e.g. is_mnist
            drawn = labelled_draw(spec_a, n, first_a + k)
            probabilities = class_probabilities(classifier, drawn.images)
            if "is" in metrics:
                row[f"is_{name}"], row[f"is_{name}_std"] = inception_score(probabilities)
            if "acc" in metrics:  # conditional accuracy: the classifier agrees with the requested class
                if drawn.labels is None:
                    raise TinydiffError(f"the 'acc' metric needs class labels ('y') in {spec_a}")
                row["accuracy"] = accuracy(probabilities, drawn.labels)
        rows.append(row)
    report.update(_mean_over_draws(rows))
    if floor:
        try:
            if feature_metrics:
                b1 = features(spec_b, n, extractor, index=1, log=log, progress=progress) if not same or draws > 1 else a
                report.update({f"{k}_floor": v for k, v in compare(b1, b, feature_metrics).items()})
            if "is" in metrics:  # the same score on real images of the reference
                report[f"is_{name}_real"], _ = inception_score(class_probabilities(classifier, images_of(spec_b, n, 0)))
        except TinydiffError as err:
            report["floor"] = f"not available: {err}"
    return report


def _mean_over_draws(rows: list[dict]) -> dict:
    """One draw's metrics as they are; several: each metric's mean, values and standard deviation."""
    if len(rows) == 1:
        return rows[0]
    out = {"draws": len(rows)}
    for key in rows[0]:
        values = [row[key] for row in rows]
        out[key] = float(np.mean(values))
        if not key.endswith("_std"):
            out[f"{key}_draws"], out[f"{key}_spread"] = values, float(np.std(values, ddof=1))
    return out
