"""Small 28x28 classifiers that tinydiff trains itself and ships (weights under 1 MB), one per
dataset (MNIST, Fashion-MNIST), for an Inception-Score analogue (``is_mnist``,
``is_fashion-mnist``) and for conditional accuracy.

The FID network has no classifier head, and ImageNet classes mean nothing for digits or
clothes, so the score here is *not* the ImageNet Inception Score: it is
IS = exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016) with p(y|x) from this classifier,
named after its dataset. Its maximum is 10 (confident and balanced over the ten classes).

Reproduce the shipped weights:  python -m tinydiff.metrics.classifier mnist   (or fashion-mnist)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import TinydiffError

WEIGHTS_DIR = Path(__file__).parent / "weights"


class SmallClassifier(nn.Module):
    """Three 3x3 conv layers with max-pooling, global average pooling, a linear head.
    x: [N, 1, 28, 28] in [-1, 1] -> logits [N, 10]."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def weights_path(dataset: str) -> Path:
    return WEIGHTS_DIR / f"{dataset}-classifier.safetensors"


def load_classifier(dataset: str = "mnist") -> SmallClassifier:
    path = weights_path(dataset)
    if not path.exists():
        available = sorted(p.name.split("-classifier")[0] for p in WEIGHTS_DIR.glob("*-classifier.safetensors"))
        raise TinydiffError(f"no classifier for {dataset!r}; tinydiff ships: {', '.join(available) or 'none'}")
    net = SmallClassifier()
    net.load_state_dict(load_file(path))
    return net.eval()


@torch.inference_mode()
def class_probabilities(net: SmallClassifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """uint8 [N, 1, 28, 28] -> p(y | x) [N, 10], float64."""
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != (1, 28, 28):
        raise TinydiffError(f"the classifier takes uint8 [N, 1, 28, 28] images, got {tuple(images.shape)}")
    assert not net.training, "the classifier must run in eval mode"
    chunks = [F.softmax(net(x.float() / 127.5 - 1), dim=1) for x in images.split(batch_size)]
    return torch.cat(chunks).double()


def inception_score(probabilities: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))), mean and std over ``splits`` equal parts (Salimans et al.)."""
    scores = []
    for part in probabilities.chunk(splits):
        marginal = part.mean(0, keepdim=True)
        kl = (part * (part.clamp_min(1e-12).log() - marginal.clamp_min(1e-12).log())).sum(1)
        scores.append(float(kl.mean().exp()))
    return float(np.mean(scores)), float(np.std(scores))


def accuracy(probabilities: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of images the classifier assigns to ``labels`` (conditional accuracy for samples)."""
    return float((probabilities.argmax(1).cpu() == labels.cpu()).double().mean())


def train_classifier(
    dataset: str = "mnist", epochs: int = 4, batch_size: int = 128, seed: int = 0, log=print
) -> tuple[SmallClassifier, float]:
    """Train on ``dataset``'s training split (Adam, one-cycle), return (net, test accuracy)."""
    from ..data import load_dataset

    torch.manual_seed(seed)
    train, test = load_dataset(f"{dataset}:train"), load_dataset(f"{dataset}:test")
    net = SmallClassifier()
    steps = epochs * (len(train) // batch_size)
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    for step in range(steps):
        index = torch.randint(0, len(train), (batch_size,), generator=generator)
        loss = F.cross_entropy(net(train.batch(index)), train.labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0:
            log(f"step {step}/{steps} loss {loss.item():.4f}")
    net.eval()
    return net, accuracy(class_probabilities(net, test.images), test.labels)


def main() -> None:
    parser = argparse.ArgumentParser(description="train and save a shipped classifier (mnist, fashion-mnist)")
    parser.add_argument("dataset", nargs="?", default="mnist")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    net, test_accuracy = train_classifier(args.dataset, args.epochs)
    WEIGHTS_DIR.mkdir(exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, weights_path(args.dataset))
    print(f"{args.dataset} test accuracy {test_accuracy:.4f}; saved {weights_path(args.dataset)}")


if __name__ == "__main__":
    main()
