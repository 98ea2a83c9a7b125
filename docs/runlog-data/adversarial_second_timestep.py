"""A two-step consistency student's second timestep (run log §69): draws 2,048 images of CKPT with the
consistency sampler at timesteps 999 then t, for each t of a comma-separated list (-1: one step only), through
the reproduction suite's cached samples (labels in MNIST's proportions), and prints FID against the training set.

    .venv/bin/python docs/runlog-data/adversarial_second_timestep.py pretrained:mnist-adversarial -1,499,300,200,100
"""

import json
import sys
from pathlib import Path

from tinydiff.experiments.lab import Lab

ckpt, grid = sys.argv[1], [int(t) for t in sys.argv[2].split(",")]
lab = Lab(
    "adversarial-second-timestep", Path("runs/adversarial_second_timestep"), Path("runs/reproduce"), n=2048, ckpt=ckpt
)
m = lab.shipped("mnist")
for t in grid:
    timesteps = [999] if t < 0 else [999, t]
    path = lab.samples(m, 2048, classes="data", sampler="consistency", timesteps=timesteps)
    print(
        json.dumps({"ckpt": ckpt, "timesteps": timesteps, "fid": lab.score(path, m.data, ("fid",))["fid"]}), flush=True
    )
