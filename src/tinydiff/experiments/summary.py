"""The index of every claim the seed write-ups make (R1-R24): the write-up, the claim, the
experiment that checks it and, from that experiment's NAME.json, our figure and the verdict."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from ..files import atomic_write

REPLICATION = "A replication of DDPM and DDIM on MNIST (Yifan Li)"
REPORT = "Denoising Diffusion Probabilistic Models, a report on Ho et al."
SLIDES = "Denoising Diffusion Implicit Models, a presentation (Kayla Bennett)"
TRYOUT = "Diffusion models, a tryout project (Alexander Chernyavskiy)"
BLOG = "DDPM, a practitioner's blog post on MNIST"

CLAIMS = {
    "R1": (REPLICATION, "DDPM with 1,000 steps beats DDIM on FID with the same model"),
    "R2": (REPLICATION, "DDIM is about 29x faster than DDPM-1000"),
    "R3": (REPLICATION, "inversion-merge of a 2 and a 5 decodes to a digit (an 8); the pixel mix to chaos"),
    "R4": (REPORT, "the forward process turns an image into noise"),
    "R5": (REPORT, "a class-conditional DDPM generates the requested digit"),
    "R6": (SLIDES, "Table 1: eta = 0 best at small S, FID falls with S, sigma-hat worst at small S and best at 1,000"),
    "R7": (SLIDES, "sampling time is linear in S"),
    "R8": (SLIDES, "Table 2: reconstruction error falls with S"),
    "R9": (SLIDES, "the same x_T gives samples sharing high-level features across S"),
    "R10": (SLIDES, "slerp between two x_T gives smooth transitions"),
    "R11": (TRYOUT, "the cosine schedule beats linear on MNIST; about the same on Fashion-MNIST"),
    "R12": (TRYOUT, "DDPM, DDIM and PNDM of about the same quality; DDIM fastest, DDPM slowest"),
    "R13": (TRYOUT, "guidance: best quality at small w, large w hallucinates"),
    "R14": (TRYOUT, "dynamic thresholding copes with pixel saturation at large w"),
    "R15": (TRYOUT, "FID, KID and IS reported; KID the more stable at small n"),
    "R16": (TRYOUT, 'a text-guided model draws a 9 for the prompt "nine"'),
    "R17": (TRYOUT, "Flowers102 (RGB, 128x128) gives nice hallucinations"),
    "R18": (BLOG, "an MLP denoiser fails where a smaller U-Net succeeds (equal training time)"),
    "R19": (BLOG, "without the time input an under-trained U-Net gives blurry averages; longer, almost real digits"),
    "R20": (BLOG, "1,500 images, a 32-channel U-Net and 500 epochs give satisfying samples"),
    "R21": (BLOG, "naive DDPM step skipping disappoints; DDIM with S = 5 works"),
    "R22": (BLOG, "DDIM samples are less varied than DDPM's"),
    "R23": (BLOG, "the ELBO weighting puts far more weight on small noise levels than L_simple"),
    "R24": (BLOG, "the per-timestep loss over training"),
}
ELSEWHERE = {  # claims no experiment here checks, and why
}


def write_summary(out: Path, path: Path | None = None) -> Path:
    """One row per claim from the NAME.json files in ``out``; written to ``path`` (default
    out/REPRODUCTION.md)."""
    from . import experiments

    out = Path(out)
    path = Path(path) if path else out / "REPRODUCTION.md"
    owner = {claim: name for name, e in experiments().items() for claim in e.claims}
    lines = [
        "# Reproducing the seed write-ups",
        "",
        "Every claim of five write-ups that replicate or explain DDPM and DDIM, the tinydiff experiment that",
        "checks it (`tinydiff reproduce NAME`), the write-up's figure, ours and the verdict. Each",
        "experiment's page has its tables, figures, n, floors and the exact command.",
        "",
        "| claim | write-up | the claim | experiment | theirs | ours | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    verdicts = Counter()
    for claim, (source, text) in CLAIMS.items():
        name = owner.get(claim)
        result = out / f"{name}.json" if name else None
        seed = ours = ""
        verdict = ELSEWHERE.get(claim, "not run yet")
        link = "-"
        if name:
            page = out / f"{name}.md"
            link = f"[{name}]({os.path.relpath(page, path.parent)})" if page.exists() else f"`{name}`"
        if result and result.exists():
            record = json.loads(result.read_text())
            found = record.get("verdicts", {}).get(claim)
            quick = " (quick)" if record.get("scale", {}).get("quick") else ""
            if found:
                seed, ours, verdict = found["seed"], found["ours"], f"**{found['verdict']}**{quick}: {found['why']}"
                verdicts[found["verdict"]] += 1
            else:
                verdict = "not computed yet"
        lines.append(f"| {claim} | {source} | {text} | {link} | {seed} | {ours} | {verdict} |")
    tally = ", ".join(f"{count} {verdict}" for verdict, count in verdicts.most_common())
    lines += ["", f"Of the {len(CLAIMS)} claims: {tally or 'none computed yet'}."]
    text = "\n".join(lines) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    return path
