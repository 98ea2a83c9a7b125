"""Consistency distillation (Song, Dhariwal, Chen & Sutskever 2023, "Consistency Models", Algorithm 2):
a student f(x_t, t) learns to map every point of the teacher's probability-flow trajectory to the
trajectory's end, clean data, so that one network evaluation generates an image and a few more,
alternated with fresh noise, refine it (samplers/consistency.py).

The trajectory. The teacher's ODE solver is one deterministic DDIM step (eq. 12, eta = 0, x0 clipped)
of a fixed gap: T / N timesteps for a teacher discretised into N steps. One training example:
x0 from the data, t drawn like any training timestep, t' = t - gap (-1, clean data, where that falls
below 0), x_t = alpha_t x0 + sigma_t eps (DDPM eq. 4), x^_t' the teacher's step from x_t. The
student's output at t should equal its own output at t' (self-consistency, their Sec. 3):
    loss = d(f(x_t, t), stopgrad f(x^_t', t'))                               (Alg. 2, eq. 7)
with the boundary condition f(x, -1) = x: at the last gap the target is the teacher's clean x0.
f is the network's x0 prediction, clipped to [-1, 1] in the target as the sampler clips it; the
student itself may pass a bound its target sits on (as in progressive distillation, training/distill.py).

Two choices follow Song & Dhariwal 2023 ("Improved Techniques for Training Consistency Models"):
the target network is the student itself without gradients (EMA decay mu = 0 for the target, as
their Sec. 3.2 argues; Consistency Models' Theorem 1 holds for any mu; the run's EMA weights are
still what ships), computed without dropout, and d is the pseudo-Huber distance
    d(x, y) = sqrt(||x - y||^2 + c^2) - c,  c = 0.00054 sqrt(dim)           (their Sec. 3.3)
which behaves like L2 for small errors and L1 for large ones (LPIPS, the paper's first choice,
needs ImageNet weights this project does not fetch).
"""

from __future__ import annotations

import math

import torch

from ..denoiser import as_denoiser
from ..schedule import NoiseSchedule, broadcast
from .distill import TeacherStep


class ConsistencyDistillation:
    """The student's per-example loss: consistency with itself across one teacher step."""

    def __init__(self, teacher: TeacherStep, student_steps: int, teacher_steps: int, schedule: NoiseSchedule):
        self.teacher = teacher
        self.gap = max(1, schedule.num_timesteps // teacher_steps)
        self.steps, self.schedule = student_steps, schedule

    def sampling(self) -> dict:
        """How the student samples (recorded in its checkpoints; ``tinydiff sample`` uses it)."""
        return {"sampler": "consistency", "steps": self.steps, "spacing": "trailing"}

    def __call__(self, net, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, labels, prediction: str):
        """Per-example losses [N] at the drawn timesteps t."""
        t_prev = (t - self.gap).clamp(min=-1)
        a = broadcast(self.schedule.alpha_bar_at(t), x0).to(x0.dtype)
        z = a.sqrt() * x0 + (1 - a).sqrt() * noise  # DDPM eq. 4
        training = net.training
        net.eval()  # the target without dropout: the network itself, not a noisy copy of it
        with torch.no_grad():
            z_prev = self.teacher(z, t, t_prev, labels)  # at t_prev = -1: the teacher's clean x0
            target = z_prev.clone()  # the boundary f(x, -1) = x; the other rows are the student's
            inner = (t_prev >= 0).to(x0.device)
            if inner.any():
                rows = as_denoiser(net, self.schedule, prediction, None if labels is None else labels[inner])
                target[inner] = rows(z_prev[inner], t_prev[inner])[1].clamp(-1, 1)
            target = target.float()
        net.train(training)
        predicted = as_denoiser(net, self.schedule, prediction, labels)(z, t)[1].float()
        beyond = ((target <= -1) & (predicted < -1)) | ((target >= 1) & (predicted > 1))  # the clip's to mend
        squared = (predicted - target).masked_fill(beyond, 0.0).pow(2).flatten(1).sum(1)
        c = 0.00054 * math.sqrt(x0[0].numel())
        return (squared + c**2).sqrt() - c  # pseudo-Huber
