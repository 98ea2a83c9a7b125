"""Post-hoc EMA: choose the length of the weights' average after training (Karras et al. 2024,
"Analyzing and Improving the Training Dynamics of Diffusion Models", EDM2, Sec. 3 and App. C.2).

A run trained with ``--posthoc-ema`` keeps two power-function averages of its weights (ema.PowerEMA,
relative lengths sigma_rel = 0.05 and 0.10, EDM2's choice) and writes both at every checkpoint to
``RUN/ema-profiles/STEP.safetensors``; these files stay when older checkpoints are deleted. Each
snapshot is the weights averaged under a profile p(tau) = (gamma + 1) tau^gamma / t^(gamma + 1) on
[0, t]. Any other profile (sigma_rel, t) is approximated by the combination sum_i x_i p_i of the
stored ones that is closest to it in L2: x solves A x = b with A_ij = <p_i, p_j> and
b_i = <p_i, p_wanted> (:func:`coefficients`), and the same combination of the stored weights is
the average that profile gives (:func:`reconstruct`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as save_safetensors
from torch import nn

from ..checkpoint import CKPT_PATTERN, resolve_checkpoint
from ..errors import TinydiffError
from ..files import atomic_write
from .ema import PowerEMA, gamma_of

PROFILES = (0.05, 0.10)  # the sigma_rel of the two averages a run keeps
FOLDER = "ema-profiles"
SNAPSHOT = re.compile(r"([0-9]+)\.safetensors")  # used with fullmatch


def profile_dot(t_a: float, gamma_a: float, t_b: float, gamma_b: float) -> float:
    """<p_a, p_b>: the integral over [0, min(t_a, t_b)] of the product of two profiles
    p(tau) = (gamma + 1) tau^gamma / t^(gamma + 1) (EDM2, App. C.2)."""
    exponent = gamma_b if t_a < t_b else -gamma_a
    return (gamma_a + 1) * (gamma_b + 1) * (t_a / t_b) ** exponent / ((gamma_a + gamma_b + 1) * max(t_a, t_b))


def coefficients(stored: list[tuple[int, float]], t: int, gamma: float) -> np.ndarray:
    """The weights x of the stored profiles (t_i, gamma_i) whose sum is closest in L2 to the profile (t, gamma)."""
    a = np.array([[profile_dot(ti, gi, tj, gj) for tj, gj in stored] for ti, gi in stored])
    b = np.array([profile_dot(ti, gi, t, gamma) for ti, gi in stored])
    return np.linalg.solve(a, b)


class Profiles:
    """The power-function averages a training run keeps, and their snapshots in RUN/ema-profiles."""

    def __init__(self, net: nn.Module):
        self.averages = [PowerEMA(net, s) for s in PROFILES]

    def update(self, net: nn.Module, t: int) -> None:
        """After the t-th optimizer step (t >= 1)."""
        for average in self.averages:
            average.update(net, t)

    def save(self, run: Path, step: int) -> None:
        tensors = {
            f"{i}/{name}": value.detach().contiguous().cpu()
            for i, average in enumerate(self.averages)
            for name, value in average.shadow.state_dict().items()
        }
        metadata = {"step": str(step), "sigma_rel": ",".join(str(s) for s in PROFILES)}
        data = save_safetensors(tensors, metadata=metadata)
        (run / FOLDER).mkdir(parents=True, exist_ok=True)
        atomic_write(run / FOLDER / f"{step:07d}.safetensors", lambda handle: handle.write(data))

    def load(self, run: Path, step: int) -> None:
        """The averages as they were at ``step`` (a resumed run's checkpoint)."""
        path = run / FOLDER / f"{step:07d}.safetensors"
        if not path.is_file():
            raise TinydiffError(f"cannot resume {run}: it keeps EMA profiles (--posthoc-ema) and {path} is missing")
        tensors, _ = _read(path)
        for i, average in enumerate(self.averages):
            average.shadow.load_state_dict(_profile(tensors, i))

    @staticmethod
    def forget_after(run: Path, step: int) -> None:
        """Delete the snapshots later than ``step``: a run resumed (or started) there writes them anew."""
        for t, path in snapshots(run):
            if t > step:
                path.unlink()


def snapshots(run: Path) -> list[tuple[int, Path]]:
    """(step, file) of a run's EMA-profile snapshots, oldest first."""
    folder = Path(run) / FOLDER
    found = [(SNAPSHOT.fullmatch(p.name), p) for p in folder.iterdir()] if folder.is_dir() else []
    return sorted((int(match.group(1)), p) for match, p in found if match)


def _profile(tensors: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """The state dict of a snapshot's i-th average (its tensors are named "i/NAME")."""
    return {k.split("/", 1)[1]: v for k, v in tensors.items() if k.startswith(f"{i}/")}


def _read(path: Path, tensors: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A snapshot's tensors (none with ``tensors=False``) and its metadata."""
    try:
        with safe_open(path, "pt") as handle:
            return {k: handle.get_tensor(k) for k in handle.keys() if tensors}, handle.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise TinydiffError(f"cannot read EMA profiles {path} ({err})") from None


def reconstruct(ckpt: str | Path, sigma_rel: float) -> tuple[dict[str, torch.Tensor], int]:
    """The weights of a training checkpoint (a run: its newest) averaged with the profile of
    relative length ``sigma_rel`` (--sigma-rel), and the checkpoint's step."""
    ckpt = resolve_checkpoint(ckpt)
    match = CKPT_PATTERN.fullmatch(ckpt.name)
    if match is None or not snapshots(ckpt.parent):
        raise TinydiffError(f"{ckpt} has no EMA profiles: --sigma-rel needs a run trained with --posthoc-ema")
    try:
        gamma_of(sigma_rel)
    except ValueError:
        raise TinydiffError(f"--sigma-rel must be in (0, {12**-0.5:.3f}), got {sigma_rel}") from None
    step = int(match.group(1))
    return average(ckpt.parent, step, sigma_rel), step


def average(run: Path, step: int, sigma_rel: float) -> dict[str, torch.Tensor]:
    """The weights averaged with the profile (sigma_rel, step), from the run's snapshots up to ``step``."""
    found = [(t, path) for t, path in snapshots(run) if 0 < t <= step]
    if not found:
        raise TinydiffError(f"{run} has no EMA profiles up to step {step}")
    stored, files = [], []
    for t, path in found:
        recorded = _read(path, tensors=False)[1].get("sigma_rel", "")
        try:
            sigmas = [float(s) for s in recorded.split(",")]
            stored += [(t, gamma_of(s)) for s in sigmas]
        except ValueError:
            raise TinydiffError(f"EMA profiles {path}: its sigma_rel record {recorded!r} is not valid") from None
        files.append((path, len(sigmas)))
    x = iter(coefficients(stored, step, gamma_of(sigma_rel)))
    total: dict[str, torch.Tensor] = {}
    for path, count in files:  # one snapshot in memory at a time, oldest first
        tensors, _ = _read(path)
        for i in range(count):
            weight = next(x)
            for name, value in _profile(tensors, i).items():
                if value.is_floating_point():
                    total[name] = total.get(name, 0.0) + weight * value.double()
    newest = _profile(tensors, 0)  # the last snapshot read: buffers come from it
    return {k: total[k].to(v.dtype) if k in total else v for k, v in newest.items()}
