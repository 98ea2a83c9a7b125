"""Wall time of 2,048 MNIST images (labels in MNIST's proportions, batches of 64) in one process, after a
warm-up: the one-step student alone, finished by its teacher (t = 50, K = 1; the defaults of --refine), and the
consistency student at four steps (run log §71).

    .venv/bin/python docs/runlog-data/refine_wall_time.py
"""

import time

import torch

import tinydiff
from tinydiff.api import class_labels

torch.set_num_threads(2)
student, teacher, consistency = (
    tinydiff.load(f"pretrained:{name}") for name in ("mnist-adversarial", "mnist", "mnist-consistency")
)
labels, n = class_labels(student, "data", 2048)
tinydiff.sample(student, 64, labels=labels[:64], refine=teacher)  # warm-up
runs = [
    ("the student alone", student, {}),
    ("refined, t = 50, K = 1", student, {"refine": teacher, "refine_from": 50, "refine_steps": 1}),
    ("refined, the defaults", student, {"refine": teacher}),
    ("the consistency student, 4 steps", consistency, {"steps": 4}),
]
for name, model, options in runs:
    start = time.perf_counter()
    tinydiff.sample(model, n, labels=labels, **options)
    print(f"{name}: {time.perf_counter() - start:.1f} s", flush=True)
