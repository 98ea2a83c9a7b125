"""Small classifiers that tinydiff trains itself and ships (weights under 1 MB), one per dataset
(MNIST, Fashion-MNIST at 28x28; the emoji's 9 categories at 32x32 RGB), for an Inception-Score
analogue (``is_mnist``, ``is_fashion-mnist``, ``is_emoji``) and for conditional accuracy.

The FID network has no classifier head, and ImageNet classes mean nothing for digits or
clothes, so the score here is *not* the ImageNet Inception Score: it is
IS = exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016) with p(y|x) from this classifier,
named after its dataset. Its maximum is the number of classes (confident and balanced over them).

Reproduce the shipped weights:  python -m tinydiff.metrics.classifier mnist   (or fashion-mnist, emoji)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import TinydiffError

WEIGHTS_DIR = Path(__file__).parent / "weights"


class SmallClassifier(nn.Module):
    """Three 3x3 conv layers with max-pooling, global average pooling, a linear head.
    x: [N, C, S, S] in [-1, 1] -> logits [N, num_classes] (MNIST: C = 1, S = 28, 10 classes;
    the emoji: C = 3, S = 32, 9 categories)."""

    def __init__(self, num_classes: int = 10, channels: int = 1, size: int = 28):
        super().__init__()
        self.shape = (channels, size, size)  # what it was trained on (the weights file's metadata)
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def classifier_name(spec: str) -> str:
    """The classifier of a dataset spec: mnist for mnist:test, emoji for every emoji spec."""
    from ..data.datasets import is_emoji

    return "emoji" if is_emoji(spec) else str(spec).partition(":")[0]


def weights_path(dataset: str) -> Path:
    return WEIGHTS_DIR / f"{dataset}-classifier.safetensors"


def load_classifier(dataset: str = "mnist") -> SmallClassifier:
    path = weights_path(classifier_name(dataset))
    if not path.exists():
        available = sorted(p.name.split("-classifier")[0] for p in WEIGHTS_DIR.glob("*-classifier.safetensors"))
        raise TinydiffError(f"no classifier for {dataset!r}; tinydiff ships: {', '.join(available) or 'none'}")
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}  # the MNIST and Fashion-MNIST weights predate it: 1 x 28 x 28, 10 classes
    net = SmallClassifier(int(meta.get("classes", 10)), int(meta.get("channels", 1)), int(meta.get("size", 28)))
    net.load_state_dict(load_file(path))
    return net.eval()


@torch.inference_mode()
def class_probabilities(net: SmallClassifier, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """uint8 [N, C, H, W] -> p(y | x) [N, classes], float64. Images larger than the classifier's size by
    a whole factor (64x64 emoji for the 32x32 classifier) are averaged down to it first."""
    channels, size, _ = net.shape
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != channels or images.shape[-1] % size:
        raise TinydiffError(
            f"the classifier takes uint8 [N, {channels}, {size}, {size}] images, "
            f"got {images.dtype} {tuple(images.shape)}"
        )
    assert not net.training, "the classifier must run in eval mode"
    factor = images.shape[-1] // size  # 1: the classifier's own size (a 1x1 average changes nothing)
    chunks = [F.softmax(net(F.avg_pool2d(x.float() / 127.5 - 1, factor)), dim=1) for x in images.split(batch_size)]
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
    net = SmallClassifier(train.num_classes, *train.shape[:2])
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
    parser = argparse.ArgumentParser(description="train and save a shipped classifier (mnist, fashion-mnist, emoji)")
    parser.add_argument("dataset", nargs="?", default="mnist")
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    net, test_accuracy = train_classifier(args.dataset, args.epochs)
    WEIGHTS_DIR.mkdir(exist_ok=True)
    channels, size, _ = net.shape
    meta = {"classes": str(net.head.out_features), "channels": str(channels), "size": str(size)}
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, weights_path(args.dataset), metadata=meta)
    print(f"{args.dataset} test accuracy {test_accuracy:.4f}; saved {weights_path(args.dataset)}")


if __name__ == "__main__":
    main()
