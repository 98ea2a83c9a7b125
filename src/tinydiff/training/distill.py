"""Progressive distillation (Salimans & Ho 2022, "Progressive Distillation for Fast Sampling of
Diffusion Models", Algorithm 2): a student learns to do in one deterministic DDIM step what its
teacher does in two, so that N student steps match 2N teacher steps. Repeating it with the
student as the next teacher halves the steps each round (``tinydiff distill``).

The trajectories. The teacher walks the DDIM trajectory of 2N "trailing" timesteps
g_0 > g_1 > ... > g_{2N-1} (then -1, clean data); the student walks every other one,
g_0 > g_2 > ..., which is exactly DDIM's own trailing trajectory of N steps when T / 2N is a
power-of-two fraction of T (checked), so that ``tinydiff sample --sampler ddim --steps N
--spacing trailing`` runs the student the way it was trained.

One training example: x0 from the data, a student step k (drawn uniformly), t = g_{2k},
z_t = alpha_t x0 + sigma_t eps. The teacher takes two DDIM steps (eq. 12 with eta = 0, x0
clipped to [-1, 1] as the sampler does) to z'' at t'' = g_{2k+2}. The student's x0 should be the
x~ whose single DDIM step from z_t lands on z'':
    x~ = (z'' - (sigma'' / sigma_t) z_t) / (alpha'' - (sigma'' / sigma_t) alpha_t)      (Alg. 2)
with alpha = sqrt(alpha_bar), sigma = sqrt(1 - alpha_bar). x~ may lie beyond [-1, 1] (one step
stands for two, each clipped), so the student samples without clipping its x0 (``clip_x0=False``,
recorded with its sampler); only its output, the last step's x0, is clipped to [-1, 1]. The loss is
||x^ - x~||^2 weighted by max(SNR(t), 1), the paper's "truncated SNR" weighting (Sec. 4), which
keeps the last, pure-noise step (SNR about 0) in the objective. Like the clip-aware loss
(objectives.py), a pixel whose target sits on a bound costs nothing where the prediction passes it:
at the last step the target is the teacher's clipped output (MNIST's background exactly -1), and
a student regressing onto the bound scatters around it and leaves half its background faint grey
(at 4 steps FID 59 against the teacher's 12.8, measured), where one allowed to overshoot gives
exactly -1.

A guided teacher (classifier-free guidance weight w) is distilled into a student that needs no
guidance: the teacher's two steps are guided, the student conditional only, so the student samples
with one network evaluation per step instead of two.
"""

from __future__ import annotations

import torch

from ..config import parse_interval
from ..denoiser import as_denoiser, clip_prediction
from ..errors import TinydiffError
from ..schedule import NoiseSchedule, broadcast


class Distillation:
    """The student's per-example loss for one round: N student steps taught by a 2N-step teacher."""

    def __init__(self, teacher: TeacherStep, student_steps: int, schedule: NoiseSchedule):
        from ..samplers import timesteps

        self.teacher = teacher
        grid = timesteps("ddim", schedule, 2 * student_steps, "trailing")
        if grid[::2] != timesteps("ddim", schedule, student_steps, "trailing"):
            raise TinydiffError(
                f"--student-steps {student_steps}: the 2N-step trajectory does not contain the N-step one for "
                f"T = {schedule.num_timesteps}; use a power of two"
            )
        self.grid = torch.tensor([*grid, -1])
        self.steps, self.schedule = student_steps, schedule

    def sampling(self) -> dict:
        """How the student samples (recorded in its checkpoints; ``tinydiff sample`` uses it)."""
        return {"sampler": "ddim", "steps": self.steps, "spacing": "trailing", "options": {"clip_x0": False}}

    def __call__(self, net, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, labels, prediction: str):
        """Per-example losses [N]; ``t`` drawn uniformly in [0, T) picks the student step k = t N / T."""
        k = (t.cpu() * self.steps) // self.schedule.num_timesteps
        t0, t1, t2 = (self.grid[2 * k + j].to(x0.device) for j in range(3))
        a0 = broadcast(self.schedule.alpha_bar_at(t0), x0).to(x0.dtype)
        z = a0.sqrt() * x0 + (1 - a0).sqrt() * noise  # DDPM eq. 4
        with torch.no_grad():
            z2 = self.teacher(self.teacher(z, t0, t1, labels), t1, t2, labels)
            a2 = broadcast(self.schedule.alpha_bar_at(t2), x0).to(x0.dtype)
            ratio = ((1 - a2) / (1 - a0)).sqrt()  # sigma'' / sigma_t
            target = (z2 - ratio * z) / (a2.sqrt() - ratio * a0.sqrt())  # Alg. 2: x~
        _, predicted = as_denoiser(net, self.schedule, prediction, labels)(z, t0)
        weight = self.schedule.snr(t0).clamp(min=1).to(x0.device, x0.dtype)  # truncated SNR (Sec. 4)
        predicted, target = predicted.float(), target.float()
        beyond = ((target <= -1) & (predicted < -1)) | ((target >= 1) & (predicted > 1))  # the clip's to mend
        return weight * (predicted - target).masked_fill(beyond, 0.0).pow(2).flatten(1).mean(1)


class TeacherStep:
    """One deterministic DDIM step of a teacher from t to t_prev (eq. 12, eta = 0, x0 clipped as the
    sampler clips it), guided with weight w when given labels (classifier-free guidance), or with a
    ``guide`` checkpoint autoguided (Karras et al. 2024), at noise levels in ``interval`` = "LO,HI"
    only when given; t_prev = -1 gives its clean x0."""

    def __init__(
        self, teacher: str, guidance: float, schedule: NoiseSchedule, device, guide: str | None = None, interval=None
    ):
        from ..model import load

        self.model = load(teacher, device=device)
        if self.model.schedule.betas.tolist() != schedule.betas.tolist():
            raise TinydiffError("the student must use the teacher's noise schedule (--schedule, --timesteps)")
        self.guide = None if guide is None else load(guide, device=device)
        self.interval = None if interval is None else parse_interval(interval)
        self.guidance, self.schedule = guidance, schedule

    @torch.no_grad()
    def __call__(self, z: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor, labels) -> torch.Tensor:
        guided = labels is not None or self.guide is not None  # an unconditional teacher has no CFG
        denoise = self.model.denoiser(labels, *(self.guidance, self.interval) if guided else (), guide=self.guide)
        _, x0 = denoise(z, t)
        a = broadcast(self.schedule.alpha_bar_at(t), z).to(z.dtype)
        eps, x0 = clip_prediction(z, x0, a)
        a_prev = broadcast(self.schedule.alpha_bar_at(t_prev), z).to(z.dtype)
        return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
