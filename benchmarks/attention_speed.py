"""Self-attention on CPU, side by side: the U-Net's written-out softmax(Q K^T / sqrt(d)) V against
PyTorch's F.scaled_dot_product_attention (what the U-Net used before), and against no attention
at all (the cost of the attention layers themselves): in the real training step of
benchmarks/train_speedups.py as `tinydiff train` runs it (NCHW; bf16 autocast as with `--amp`, and
fp32) and in a batched forward pass under torch.inference_mode as sampling runs it (channels_last,
fp32). Interleaved rounds, medians.

    python benchmarks/attention_speed.py [--preset nano --batch-size 64 --rounds 5 --steps 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from train_speedups import SHAPE, compare, make_step

from tinydiff.nets import build_net, net_config
from tinydiff.nets.unet import Attention


def sdpa_forward(self: Attention, x: torch.Tensor) -> torch.Tensor:
    """The same attention through F.scaled_dot_product_attention."""
    b, c, h, w = x.shape
    q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
    out = F.scaled_dot_product_attention(q, k, v)
    return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


def swap_attention(kind: str):
    """A `prepare` hook: every Attention of the net runs through SDPA, stays, or is removed."""

    def prepare(net: torch.nn.Module) -> None:
        for module in list(net.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, Attention) and kind == "sdpa":
                    child.forward = sdpa_forward.__get__(child)
                elif isinstance(child, Attention) and kind == "none":
                    setattr(module, name, torch.nn.Identity())

    return prepare


KINDS = {"F.scaled_dot_product_attention": "sdpa", "written out (tinydiff)": "ours", "no attention": "none"}


def make_forward(preset: str, kind: str, batch_size: int):
    torch.manual_seed(0)
    net = build_net(net_config("unet", preset, SHAPE, num_classes=10)).eval()
    swap_attention(kind)(net)
    net = net.to(memory_format=torch.channels_last)
    x = torch.randn(batch_size, *SHAPE).contiguous(memory_format=torch.channels_last)
    t, y = torch.randint(0, 1000, (batch_size,)), torch.randint(0, 11, (batch_size,))

    def forward() -> None:
        with torch.inference_mode():
            net(x, t, y)

    return forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="nano")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--sample-batch-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="timed calls per variant per round")
    parser.add_argument("--json", default="benchmarks/results/attention_speed.json")
    args = parser.parse_args()

    calls, grads = {}, {}
    for label, kind in KINDS.items():
        for bf16 in (True, False):
            prepare = swap_attention(kind)
            step, _, grads[label, bf16] = make_step(args.preset, False, bf16, False, args.batch_size, prepare)
            calls[label, "train step, bf16" if bf16 else "train step, fp32"] = step, args.batch_size
        forward = make_forward(args.preset, kind, args.sample_batch_size)
        calls[label, "sampling forward, fp32"] = forward, args.sample_batch_size
    timings = {key: [] for key in calls}
    for _ in range(args.rounds):
        for key, (call, n) in calls.items():
            call()  # one untimed call: the previous variant's caches are cold for this one
            started = time.perf_counter()
            for _ in range(args.steps):
                call()
            timings[key].append(args.steps * n / (time.perf_counter() - started))

    print(f"\n{args.preset}, {torch.get_num_threads()} threads, torch {torch.__version__}, median")
    print(f"images/s of {args.rounds} interleaved rounds x {args.steps} calls (train batch {args.batch_size}, sampling")
    print(f"batch {args.sample_batch_size}); the ratio is to F.scaled_dot_product_attention in the same setting\n")
    print("| attention | setting | images/s | vs SDPA | grad cosine to SDPA |")
    print("|---|---|---:|---:|---:|")
    rows = []
    for (label, setting), rounds in timings.items():
        speed, base = statistics.median(rounds), statistics.median(timings["F.scaled_dot_product_attention", setting])
        cosine = None
        if setting.startswith("train") and label != "no attention":
            bf16 = "bf16" in setting
            cosine = compare(grads[label, bf16], grads["F.scaled_dot_product_attention", bf16])[0]
        rows.append({"attention": label, "setting": setting, "images_per_s": speed, "ratio": speed / base,
                     "grad_cosine_to_sdpa": cosine, "rounds": rounds})  # fmt: skip
        shown = "-" if cosine is None else f"{cosine:.6f}"
        print(f"| {label} | {setting} | {speed:.0f} | {speed / base:.2f}x | {shown} |")
    result = {"preset": args.preset, "batch_size": args.batch_size, "sample_batch_size": args.sample_batch_size,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "rows": rows}  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
