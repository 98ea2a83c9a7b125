"""Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN feature manifolds.

Each set's manifold is the union of balls around its points with radius the distance to the
k-th nearest neighbour in the same set (k = 3). Precision: the fraction of generated samples
inside the real manifold; recall: the fraction of real samples inside the generated manifold.
"""

from __future__ import annotations

import numpy as np
import torch


def _kth_neighbour_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    radii = []
    for start in range(0, len(x), chunk):
        d = torch.cdist(x[start : start + chunk], x)
        radii.append(d.kthvalue(k + 1, dim=1).values)  # k + 1: the point itself is at distance 0
    return torch.cat(radii)


def _coverage(manifold: torch.Tensor, radii: torch.Tensor, queries: torch.Tensor, chunk: int) -> float:
    inside = []
    for start in range(0, len(queries), chunk):
        d = torch.cdist(queries[start : start + chunk], manifold)
        inside.append((d <= radii[None]).any(dim=1))
    return float(torch.cat(inside).float().mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    real_t, fake_t = torch.from_numpy(np.asarray(real, np.float64)), torch.from_numpy(np.asarray(fake, np.float64))
    real_radii = _kth_neighbour_radii(real_t, k, chunk)
    fake_radii = _kth_neighbour_radii(fake_t, k, chunk)
    return _coverage(real_t, real_radii, fake_t, chunk), _coverage(fake_t, fake_radii, real_t, chunk)
