"""An adversarial term for a consistency student (``tinydiff distill --consistency --adversarial W``):
a discriminator learns to tell the student's one-step images from real ones, and the student learns,
besides its consistency loss, to fool it, as Consistency Trajectory Models (Kim et al. 2024) and
Adversarial Diffusion Distillation (Sauer et al. 2023) add to their few-step students. The
consistency loss pulls the student toward its teacher; the discriminator pulls its one-step images
toward the data, where the student's blur and broken strokes are easiest to see.

The discriminator. As Adversarial Diffusion Distillation does with a frozen pretrained network
(DINO there), the features are a frozen network's: the project's classifier of the dataset
(metrics/classifier.py). At each of its three ReLU outputs a trainable head (two 3x3 convolutions,
the spatial mean) gives a vector h_k; the discriminator's output is the sum over k of a linear
score of h_k plus, for a class-conditional student, the projection of h_k on an embedding of the
class (Miyato & Koyama 2018, the projection discriminator):
    D(x, y) = sum_k  w_k . h_k + e_k(y) . h_k
On features made for digits the heads tell real from generated within a few hundred steps, where
a discriminator learnt from pixels needs far longer than a CPU distillation lasts. The same
classifier scores conditional accuracy and the Inception-Score analogue (metrics/classifier.py), so
those two flatter a student trained against it; FID, on the Inception network, does not.

The losses, the hinge GAN's (Lim & Ye 2017; Miyato et al. 2018), alternating: one discriminator
step on a batch of real images x and the student's images G(z) = f(z, T - 1) from fresh noise,
    L_D = E[max(0, 1 - D(x, y))] + E[max(0, 1 + D(G(z), y))]
(Adam at 1e-3, betas 0 and 0.99), then the student's step on its consistency loss plus
    W * L_G,  L_G = -E[D(G(z), y)]
through the updated discriminator. The discriminator runs in float32 whatever the student's autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..denoiser import as_denoiser
from ..errors import TinydiffError
from ..metrics.classifier import SmallClassifier

LR = 1e-3  # the discriminator's Adam (betas 0, 0.99), as in BigGAN and StyleGAN
BETAS = (0.0, 0.99)
WIDTH = 64  # channels of each head


class FeatureDiscriminator(nn.Module):
    """Trainable heads on a frozen classifier's ReLU outputs; D(x, y) as in the module docstring."""

    def __init__(self, features: SmallClassifier, num_classes: int | None):
        super().__init__()
        self.features = features.eval().requires_grad_(False)
        widths = [m.num_features for m in features.features if isinstance(m, nn.BatchNorm2d)]
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c, WIDTH, 3, padding=1),
                nn.LeakyReLU(0.2),
                nn.Conv2d(WIDTH, WIDTH, 3, padding=1),
                nn.LeakyReLU(0.2),
            )
            for c in widths
        )
        self.scores = nn.ModuleList(nn.Linear(WIDTH, 1) for _ in widths)
        self.classes = None if not num_classes else nn.ModuleList(nn.Embedding(num_classes, WIDTH) for _ in widths)

    def train(self, mode: bool = True):
        super().train(mode)
        self.features.eval()  # frozen, batch norm included
        return self

    def trainable(self) -> dict:
        """The learnt part of the state (the classifier ships with tinydiff)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("features.")}

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """x: [N, C, H, W] in [-1, 1] -> scores [N]."""
        out, k = 0, 0
        for layer in self.features.features:
            x = layer(x)
            if isinstance(layer, nn.ReLU):
                h = self.heads[k](x).mean((2, 3))
                out = out + self.scores[k](h).squeeze(1)
                if self.classes is not None:
                    out = out + (self.classes[k](labels) * h).sum(1)
                k += 1
        return out


class AdversarialTerm:
    """The discriminator, its optimizer and the two losses; state() / load() for checkpoints."""

    def __init__(self, features: SmallClassifier, num_classes: int | None, weight: float, schedule, device):
        self.discriminator = FeatureDiscriminator(features, num_classes).to(device).train()
        self.heads = [p for p in self.discriminator.parameters() if p.requires_grad]  # all but the classifier
        self.optimizer = torch.optim.Adam(self.heads, lr=LR, betas=BETAS)
        self.weight, self.schedule, self.device = weight, schedule, device
        self._sums, self._count = {"d_loss": 0.0, "g_loss": 0.0}, 0

    def generate(self, net, noise: torch.Tensor, labels, prediction: str) -> torch.Tensor:
        """The student's one-step images f(z, T - 1), clipped to [-1, 1] as its sampler clips them."""
        t = self.schedule.num_timesteps - 1
        return as_denoiser(net, self.schedule, prediction, labels)(noise, t)[1].float().clamp(-1, 1)

    def _scores(self, x: torch.Tensor, labels) -> torch.Tensor:
        with torch.autocast(self.device.type, enabled=False):
            return self.discriminator(x.float(), labels)

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor, labels) -> torch.Tensor:
        """L_D on one (micro-)batch; the caller steps the optimizer."""
        loss = F.relu(1 - self._scores(real, labels)).mean() + F.relu(1 + self._scores(fake.detach(), labels)).mean()
        self._sums["d_loss"] += loss.item()
        return loss

    def generator_loss(self, fake: torch.Tensor, labels) -> torch.Tensor:
        """W * L_G: what the student adds to its loss (gradients reach the student only)."""
        for p in self.heads:
            p.requires_grad_(False)
        try:
            loss = -self._scores(fake, labels).mean()
        finally:
            for p in self.heads:
                p.requires_grad_(True)
        self._sums["g_loss"] += loss.item()
        self._count += 1
        return self.weight * loss

    def log(self) -> dict:
        """Mean losses since the last call (for log.jsonl), then reset."""
        out = {k: v / max(1, self._count) for k, v in self._sums.items()}
        self._sums, self._count = dict.fromkeys(self._sums, 0.0), 0
        return out

    def state(self) -> dict:
        return {"discriminator": self.discriminator.trainable(), "optimizer": self.optimizer.state_dict()}

    def load(self, state: dict) -> None:
        missing, unexpected = self.discriminator.load_state_dict(state["discriminator"], strict=False)
        if unexpected or any(not k.startswith("features.") for k in missing):
            raise TinydiffError(f"the checkpoint's discriminator does not fit this run's ({unexpected or missing})")
        self.optimizer.load_state_dict(state["optimizer"])
