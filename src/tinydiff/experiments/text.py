"""Text-conditioned generation on MNIST (a tryout project's "text guided model" drawing a 9 for the
prompt "nine"): prompt accuracy for the phrasings seen in training and for held-out ones, against
the guidance weight w, with FID beside the class-conditional model's; what prompts outside the
label set do.

Prompt accuracy: the fraction of samples that the project's MNIST classifier (metrics/classifier.py)
reads as the prompt's digit. Samples take the prompts in turn, ordered so that image i asks for
digit i % 10: every digit equally often, every phrasing of it in turn.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.captions import phrasings
from . import experiment
from .lab import Lab, Model, Pending, Report
from .summary import TRYOUT

SAMPLING = {"sampler": "dpm++2m", "steps": 20}
ODD = ("a cat", "seventeen", "", "an " + "extremely " * 99 + "long prompt")  # outside the captions


def interleaved(per_class: list[list[str]]) -> list[str]:
    """Class 0's first phrasing, class 1's first, ..., class 0's second, ...: prompt i is class i % K's."""
    return [captions[j] for j in range(len(per_class[0])) for captions in per_class]


def predicted(lab: Lab, path) -> np.ndarray:
    """The MNIST classifier's digit for each image of a samples file (a cell)."""
    from ..metrics.classifier import class_probabilities, load_classifier

    def classify() -> dict:
        x = torch.from_numpy(lab.load(path)["x"]).permute(0, 3, 1, 2)  # uint8 NHWC -> NCHW
        return {"digits": class_probabilities(load_classifier("mnist"), x).argmax(1).tolist()}

    return np.array(lab.cell("digits", {"samples": path.stem}, classify)["digits"])


def prompt_row(lab: Lab, m: Model, n: int, w: float, held_out: bool) -> dict:
    path = lab.samples(m, n, prompts=interleaved(phrasings("mnist", held_out)), guidance=w, **SAMPLING)
    accuracy = float((predicted(lab, path) == np.arange(n) % 10).mean())
    scores = lab.score(path, "mnist") if not held_out else {}
    return {"w": w, "phrasings": "held out" if held_out else "training", "accuracy": accuracy, **scores}


def odd_prompts(lab: Lab, m: Model, w: float) -> list[dict]:
    """What the classifier reads in 64 samples of each prompt outside the captions."""
    rows = []
    for prompt in ODD:
        path = lab.samples(m, lab.pick(64, 8), prompts=[prompt], guidance=w, **SAMPLING)
        counts = np.bincount(predicted(lab, path), minlength=10)
        top = counts.argsort()[::-1][:3]
        shown = prompt if len(prompt) < 40 else f"{prompt[:20]}... ({len(prompt)} characters)"
        read = ", ".join(f"{d}: {counts[d]}" for d in top if counts[d])
        rows.append({"prompt": repr(shown), "w": w, "read as": read})
    return rows


def _grid(lab: Lab, m: Model, w: float, name: str, prompts: list[str]) -> str:
    from ..api import sample
    from ..viz import save_grid

    path = lab.figure(name)
    if not path.exists():
        if lab.cached_only:
            raise Pending("figure")
        sampling = {**SAMPLING, "steps": lab.pick(SAMPLING["steps"], 4)}
        images = sample(m.model, lab.pick(8, 2) * len(prompts), seed=lab.seed, prompts=prompts, guidance=w, **sampling)
        save_grid(images, path, len(prompts))  # a column per prompt
    return path.name


@experiment("text", claims=("R16",))
def text(lab: Lab) -> Report:
    """A text-conditioned MNIST model: prompt accuracy (training and held-out phrasings) and FID against w."""
    report = Report("Text-conditioned generation on MNIST", TRYOUT)
    if lab.quick:  # a few steps on the stand-in MNIST, with the dependency-free encoder
        encoder = "words"
        m = lab.attempt(lab.trained, "text-quick", data="mnist", text=encoder, steps=3, minutes=None, batch_size=8)
        if m is None:
            return report
    else:
        m = lab.shipped("mnist-text")
        encoder = m.model.text_encoder
    n = lab.pick(lab.n, 20)
    weights = lab.pick((0.0, 1.0, 2.0, 4.0), (0.0, 2.0))
    report.summary = (
        f"The text-conditioned model {'trained for a few steps' if lab.quick else 'pretrained:mnist-text'} (sentence "
        f"encoder {encoder}); prompts are captions of "
        f"the digits: {len(phrasings('mnist')[0])} phrasings per digit in training (e.g. "
        f"{', '.join(repr(p) for p in phrasings('mnist')[9][:4])}), {len(phrasings('mnist', True)[0])} held out "
        f"(e.g. {', '.join(repr(p) for p in phrasings('mnist', True)[9][:3])})."
    )
    rows = [
        lab.attempt(prompt_row, lab, m, n, w, held) or {"w": w, "phrasings": "held out" if held else "training"}
        for w in weights
        for held in (False, True)
    ]
    classes = lab.shipped("mnist")
    reference = lab.attempt(
        lambda: {"w": 0.0, "phrasings": "class labels (pretrained:mnist)", **lab.score(
            lab.samples(classes, n, classes="all", guidance=0.0, **SAMPLING), "mnist")}
    )  # fmt: skip
    report.table(
        f"n = {n} samples per row ({SAMPLING['sampler']}, {SAMPLING['steps']} steps), every digit in turn; accuracy: "
        "the MNIST classifier reads the prompt's digit; FID against the MNIST training set, the floor beside "
        "(training phrasings only)",
        rows + ([reference] if reference else []),
        ["w", "phrasings", "accuracy", "fid", "fid_floor", "kid"],
    )
    odd = lab.attempt(odd_prompts, lab, m, 2.0)
    if odd:
        report.table(
            f"Prompts outside the captions, {lab.pick(64, 8)} samples each at w = 2: the three digits the classifier "
            "reads most (the empty prompt is the unconditional model; a prompt longer than the encoder reads is cut "
            "there)",
            odd,
            ["prompt", "w", "read as"],
        )
    held = interleaved(phrasings("mnist", True))[:10]
    for w in weights:
        grid = lab.attempt(_grid, lab, m, w, f"held-out-w{w:g}.png", held)
        if grid:
            report.figures.append((grid, f"w = {w:g}: a column per held-out prompt ({held[0]!r}, {held[1]!r}, ...)"))
    nine = lab.attempt(_grid, lab, m, 2.0, "nine.png", ["nine"] * 8)
    if nine:
        report.figures.append((nine, 'the prompt "nine", w = 2'))
    scored = [r for r in rows if "accuracy" in r]
    if len(scored) == len(rows) and reference:
        fid_ok = {r["w"] for r in scored if r["phrasings"] == "training" and r["fid"] <= reference["fid"] + 2}
        held = [r for r in scored if r["phrasings"] == "held out"]
        best = max([r for r in held if r["w"] in fid_ok] or held, key=lambda r: r["accuracy"])
        where = "within 2 of" if best["w"] in fid_ok else "more than 2 above"
        report.verdict(
            "R16",
            'a text-guided model draws a 9 for the prompt "nine"',
            f"held-out phrasings: accuracy {best['accuracy']:.1%} at w = {best['w']:g}, where FID with training "
            f"phrasings is {where} the class-conditional model's {reference['fid']:.2f}",
            "reproduced" if best["accuracy"] >= 0.95 and best["w"] in fid_ok else
            "partly" if best["accuracy"] >= 0.8 else "not reproduced",
            "prompts it never saw in training draw the digit they name",
        )  # fmt: skip
    return report
