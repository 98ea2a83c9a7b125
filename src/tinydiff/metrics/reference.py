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

import numpy as np
import torch

from ..data import ImageData, load_dataset
from ..data.fetch import DATASETS
from ..errors import TinydiffError
from ..files import cache_dir, check_cache, store
from .classifier import accuracy, class_probabilities, inception_score, load_classifier
from .inception import PREPROCESSING, InceptionFeatures


def is_dataset_spec(spec: str) -> bool:
    return str(spec).partition(":")[0] in DATASETS


def canonical_spec(spec: str) -> str:
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


def features(spec: str, n: int, extractor: InceptionFeatures, index: int = 0, log=print) -> np.ndarray:
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
    result = extractor(images, progress=True)
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
    spec_a: str, spec_b: str, n: int, metrics, extractor: InceptionFeatures | None, floor: bool = True, log=print
) -> dict:
    """Metrics of image set A against reference B at n images each, with B's real-vs-real floor
    (draw 0 vs draw 1 of B) beside every figure."""
    from . import compare

    if type(n) is not int or n < 2:  # a covariance needs two images
        raise TinydiffError(f"the number of images per set must be an integer >= 2, got {n!r}")
    same = str(spec_a) == str(spec_b)
    index_a = 1 if same else 0
    feature_metrics = [m for m in metrics if m not in ("is", "acc")]
    report = {"a": str(spec_a), "b": str(spec_b), "n": n}
    if feature_metrics:  # Inception-feature metrics (the classifier metrics need no extractor)
        report.update({"weights": extractor.weights_hash, "preprocessing": PREPROCESSING})
        a = features(spec_a, n, extractor, index=index_a, log=log)
        b = features(spec_b, n, extractor, index=0, log=log)
        report.update(compare(a, b, feature_metrics))
    if "is" in metrics or "acc" in metrics:  # the classifier of the reference dataset, e.g. is_mnist
        name = str(spec_b).partition(":")[0] if is_dataset_spec(spec_b) else None
        if name is None:
            raise TinydiffError("the 'is' and 'acc' metrics need a dataset spec (e.g. mnist) as the reference")
        classifier = load_classifier(name)
        drawn = labelled_draw(spec_a, n, index_a)
        probabilities = class_probabilities(classifier, drawn.images)
        if "is" in metrics:
            report[f"is_{name}"], report[f"is_{name}_std"] = inception_score(probabilities)
        if "acc" in metrics:  # conditional accuracy: the classifier agrees with the requested class
            if drawn.labels is None:
                raise TinydiffError(f"the 'acc' metric needs class labels ('y') in {spec_a}")
            report["accuracy"] = accuracy(probabilities, drawn.labels)
    if floor:
        try:
            if feature_metrics:
                b1 = a if same else features(spec_b, n, extractor, index=1, log=log)
                report.update({f"{k}_floor": v for k, v in compare(b1, b, feature_metrics).items()})
            if "is" in metrics:  # the same score on real images of the reference
                report[f"is_{name}_real"], _ = inception_score(class_probabilities(classifier, images_of(spec_b, n, 0)))
        except TinydiffError as err:
            report["floor"] = f"not available: {err}"
    return report
