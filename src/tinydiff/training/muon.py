"""Muon for the hidden layers, AdamW for the rest (``tinydiff train``'s default optimizer).

Muon (Jordan et al. 2024, "Muon: An optimizer for hidden layers in neural networks") is SGD with Nesterov
momentum whose update of each weight matrix W (a convolution's kernel flattened to out x in * k * k) is
replaced by the nearest semi-orthogonal matrix: with the momentum buffer B and gradient g,
    B_t = mu B_{t-1} + (1 - mu) g_t,        M_t = (1 - mu) g_t + mu B_t          (Nesterov)
    O_t = U V^T  where M_t = U S V^T,   approximated by five steps of the quintic Newton-Schulz iteration
          X <- a X + (b X X^T + c (X X^T)^2) X,  (a, b, c) = (3.4445, -4.7750, 2.0315),  X_0 = M / ||M||_F
    W_t = W_{t-1} - lr * 0.2 sqrt(max(A, B)) * O_t
The factor 0.2 sqrt(max(A, B)) for an A x B matrix gives the update the RMS of a typical AdamW update
(Liu et al. 2025, "Muon is Scalable for LLM Training", Sec. 2.2), so AdamW's learning rate and schedule
serve both. Orthogonalising equalises the update's singular values: directions the gradient rarely
takes are learned as fast as its dominant ones. The layers that read the image or write the prediction,
the embedding tables, biases and norms take AdamW (Jordan et al.: Muon is for hidden layers); a network
names its edge layers in ``edge_layers``.

Matrices of the same shape are orthogonalised together (batched matrix products), which on a CPU costs
one call per shape instead of one per matrix. torch.optim.Muon does the same arithmetic (in bfloat16) but takes
2-D parameters only, not convolution kernels; the tests compare the two on weight matrices.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn
from torch.optim.adamw import adamw as adamw_update

NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)  # Jordan et al. 2024: the quintic's coefficients
NEWTON_SCHULZ_STEPS = 5
ADAMW_RMS = 0.2  # Liu et al. 2025: the RMS of AdamW's updates that Muon's are scaled to


def orthogonalise(M: torch.Tensor, steps: int = NEWTON_SCHULZ_STEPS) -> torch.Tensor:
    """[..., A, B] -> approximately U V^T of each matrix's SVD U S V^T (singular values brought into about
    [0.7, 1.2] by the quintic Newton-Schulz iteration; exact orthogonality is not needed)."""
    a, b, c = NEWTON_SCHULZ
    X = M / (M.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # every singular value <= 1
    wide = X.shape[-2] <= X.shape[-1]
    if not wide:  # iterate on the smaller Gram matrix X X^T
        X = X.mT
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return X if wide else X.mT


def split_parameters(net: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(Muon's, AdamW's) parameters: Muon takes the weights of two or more dimensions, except those of
    embedding tables and of the layers whose names start with one of ``net.edge_layers``."""
    edges = tuple(f"{name}." for name in getattr(net, "edge_layers", ()))
    embeddings = {id(m.weight) for m in net.modules() if isinstance(m, nn.Embedding)}
    muon, adamw = [], []
    for name, p in net.named_parameters():
        hidden = p.ndim >= 2 and id(p) not in embeddings and not name.startswith(edges)
        (muon if hidden else adamw).append(p)
    return muon, adamw


class Muon(torch.optim.Optimizer):
    """Muon on ``net``'s hidden weight matrices (the first parameter group), AdamW on the rest (the second),
    at one learning rate (see the module). AdamW's state has torch.optim.AdamW's keys and arithmetic."""

    def __init__(
        self,
        net: nn.Module,
        lr: float,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        muon, adamw = split_parameters(net)
        groups = [dict(params=muon, muon=True), dict(params=adamw, muon=False)]
        super().__init__(groups, dict(lr=lr, weight_decay=weight_decay, momentum=momentum, betas=betas, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        muon, adamw = self.param_groups
        self._muon_step(muon)
        self._adamw_step(adamw)

    def _muon_step(self, group: dict) -> None:
        lr, mu = group["lr"], group["momentum"]
        by_shape = defaultdict(list)
        for p in group["params"]:
            if p.grad is not None:
                by_shape[p.shape].append(p)
        for shape, params in by_shape.items():
            buffers = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p)) for p in params]
            grads = [p.grad for p in params]
            torch._foreach_lerp_(buffers, grads, 1 - mu)  # B_t
            M = torch.stack([g.lerp(b, mu) for g, b in zip(grads, buffers)]).flatten(2)  # M_t, [n, A, B]
            O = orthogonalise(M.float()) * (ADAMW_RMS * max(M.shape[-2:]) ** 0.5)
            if group["weight_decay"]:
                torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
            torch._foreach_add_(params, list(O.to(params[0].dtype).unflatten(2, shape[1:]).unbind()), alpha=-lr)

    def _adamw_step(self, group: dict) -> None:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            return
        for p in params:
            if not self.state[p]:
                self.state[p].update(
                    step=torch.tensor(0.0), exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p)
                )
        states = [self.state[p] for p in params]
        beta1, beta2 = group["betas"]
        adamw_update(
            params,
            [p.grad for p in params],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [],
            [s["step"] for s in states],
            foreach=True,
            amsgrad=False,
            beta1=beta1,
            beta2=beta2,
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=False,
        )
