"""A one-step student's images refined by its teacher (run log §70-71, trial): draws 2,048 images of STUDENT in one
step (labels in its data's proportions), noises them again to timestep t (DDPM eq. 4, fresh noise) and lets TEACHER
finish with dpm++2m over K timesteps from t (spacing SPACING, noise ETA), for each "t:K:ETA" of a comma-separated
list (K = 0: the student alone); "t/t2/t3::ETA" steps along t, t2, t3 instead. Prints FID against the training set
at n = 2,048 (one draw each, the same images and noise for every entry). `tinydiff sample/eval --refine` steps
along trajectories such as "500/169/43" (evenly in log-SNR down to sigma 0.08; `--spacing logsnr` runs on to t = 0).

    .venv/bin/python docs/runlog-data/student_then_teacher.py pretrained:mnist-adversarial pretrained:mnist \
        300:3:0,300:3:1,500/169/43::0 --spacing trailing
"""

import argparse
import json
from pathlib import Path

import torch

from tinydiff.api import class_labels, sample
from tinydiff.metrics.inception import InceptionFeatures
from tinydiff.metrics.reference import score
from tinydiff.model import load
from tinydiff.samplers.base import noise_like
from tinydiff.viz import save_npz

parser = argparse.ArgumentParser()
parser.add_argument("student")
parser.add_argument("teacher")
parser.add_argument("grid")
parser.add_argument("--spacing", default="trailing")
parser.add_argument("--n", type=int, default=2048)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--out", default="runs/student_then_teacher")
args = parser.parse_args()

student, teacher = load(args.student), load(args.teacher)
labels, n = class_labels(student, "data", args.n)
x0 = sample(student, n, labels=labels, seed=args.seed, batch_size=256)
extractor = InceptionFeatures("cpu", log=lambda *a: None)
out = Path(args.out)
for entry in args.grid.split(","):
    t, k, eta = entry.split(":")
    explicit = "/" in t
    tau = [int(step) for step in t.split("/")]  # an explicit trajectory, or only its start
    t, k, eta = tau[0], len(tau) if explicit else int(k), float(eta)
    if k == 0:
        images = x0
    else:
        generator = torch.Generator().manual_seed(args.seed + 1)
        a = float(teacher.schedule.alpha_bar_at(t))
        x_t = a**0.5 * x0 + (1 - a) ** 0.5 * noise_like(x0, generator)  # DDPM eq. 4
        tau = tau if explicit else teacher.schedule.timesteps(k, args.spacing, t).tolist()
        images = sample(
            teacher,
            n,
            labels=labels,
            sampler="dpm++2m",
            timesteps=tau,
            eta=eta,
            x_T=x_t,
            seed=args.seed + 2,
            batch_size=256,
        )
    name = f"t{'-'.join(map(str, tau if k else [t]))}-k{k}-eta{eta}" + ("" if explicit else f"-{args.spacing}")
    path = save_npz(images, out / f"{name}.npz", labels)
    fid = score(
        str(path),
        student.config["data"]["spec"],
        n,
        ["fid"],
        extractor,
        floor=False,
        log=lambda *a: None,
        progress=False,
    )["fid"]
    trajectory = "/".join(map(str, tau)) if k else "-"
    print(json.dumps({"t": t, "k": k, "eta": eta, "trajectory": trajectory, "fid": round(fid, 2)}), flush=True)
