"""Sample-quality metrics over Inception features: FID, KID, precision/recall, with the floor."""

from __future__ import annotations

import numpy as np

from .fid import fid
from .kid import kid
from .precision_recall import precision_recall

METRICS = ("fid", "kid", "pr")  # over Inception features; "is" (is_mnist) is computed in reference.score


def compare(features_a: np.ndarray, features_b: np.ndarray, metrics=METRICS) -> dict:
    """Every requested metric between two feature sets [N, 2048]."""
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {', '.join(sorted(unknown))}; choose from {', '.join(METRICS)}")
    out = {}
    if "fid" in metrics:
        out["fid"] = fid(features_a, features_b)
    if "kid" in metrics:
        out["kid"], out["kid_std"] = kid(features_a, features_b)
    if "pr" in metrics:
        out["precision"], out["recall"] = precision_recall(features_b, features_a)
    return out


__all__ = ["METRICS", "compare", "fid", "kid", "precision_recall"]
