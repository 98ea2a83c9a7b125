"""Fréchet Inception Distance (Heusel et al. 2017), in float64.

FID = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)), with the means and covariances
of the two feature sets.

From features (:func:`fid`), the trace of the square root needs no matrix square root: with the
centred features X [n1, D] and Y [n2, D], S_1 S_2 = X'X Y'Y / ((n1 - 1)(n2 - 1)) has the nonzero
eigenvalues of (X Y')(X Y')', the squared singular values of X Y', so
    Tr (S_1 S_2)^(1/2) = ||X Y'||_* / sqrt((n1 - 1)(n2 - 1))     (the nuclear norm: sum of singular values),
exact, and an SVD of an [n1, n2] matrix instead of scipy's sqrtm of a [D, D] one (0.001 s
against 23 s at n = 16, 3 s against 18 s at n = 2,048, D = 2,048).
From statistics alone (:func:`frechet_distance`) it is scipy's sqrtm; when that is not finite (a
singular product) eps * I is added to both covariances, as pytorch-fid does.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], covariance [D, D]) of features [N, D], float64, unbiased covariance."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError("need at least two feature vectors [N, D] for FID statistics")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    diff = mu1 - mu2
    with warnings.catch_warnings():  # a singular product is handled below
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: imaginary component {np.abs(covmean.imag).max():.3g} in sqrtm")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two feature sets [n, D] (n >= 2 each), through the nuclear norm (module docstring)."""
    x, y = (np.asarray(f, dtype=np.float64) for f in (features_a, features_b))
    if x.ndim != 2 or y.ndim != 2 or min(len(x), len(y)) < 2 or x.shape[1] != y.shape[1]:
        raise ValueError("need at least two feature vectors [N, D] of the same D in each set for FID")
    diff = x.mean(axis=0) - y.mean(axis=0)
    x, y = x - x.mean(axis=0), y - y.mean(axis=0)
    n1, n2 = len(x) - 1, len(y) - 1
    trace_sqrt = np.linalg.svd(x @ y.T, compute_uv=False).sum() / np.sqrt(n1 * n2)
    return float(diff @ diff + (x * x).sum() / n1 + (y * y).sum() / n2 - 2 * trace_sqrt)
