"""Few-step sampling: distilled students (tinydiff distill) against their teacher with its ordinary
samplers at the same number of network evaluations.

Every row: n samples with labels in the training data's proportions, scored against the training
set (the students and the teacher's DPM-Solver++ over --draws disjoint draws: mean and spread; the
other rows one draw), the real-vs-real floor beside, and the wall time of drawing the n images of
one draw on this machine (Inception on a 2-core CPU scores 7-20 images/s: every draw of 2,048 costs
minutes). The teacher samples with DDIM (eta 0), with DPM-Solver++(2M) (eta 0) and with its SDE
variant (eta 3); the students with what their checkpoint records (DDIM over the trailing timesteps
they were trained for; a consistency student with its own sampler at each number of evaluations
asked). Cached under runs/reproduce like `tinydiff reproduce`: a cut run continues. Prints a table,
writes benchmarks/results/few_steps.json (few_steps_DATA.json for a teacher of other data than MNIST).

    .venv/bin/python benchmarks/few_steps.py [--students runs/distill-mnist] [--consistency runs/cd]
        [--teacher pretrained:mnist] [--evaluations 1 2 4] [--teacher-samplers dpm++2m ddim "dpm++2m, eta 3"]
        [--n 2048] [--draws 3] [--quick]

--quick: n = 64, one draw: a check that it runs, not a result.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from tables import lab_folder, over_draws, print_table, scoring_options, write_json

from tinydiff.experiments.lab import Lab

# the teacher's ordinary samplers: (name, options, evaluations it runs at; None: every one asked)
TEACHER_SAMPLERS = [
    ("dpm++2m", {"sampler": "dpm++2m"}, None),  # at 1 step the same as DDIM's
    ("ddim", {"sampler": "ddim"}, (2, 4)),
    ("dpm++2m, eta 3", {"sampler": "dpm++2m", "eta": 3.0}, (4,)),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", help="a distill --out folder (steps-N inside)")
    parser.add_argument("--consistency", help="a distill --consistency --out folder: its student at every evaluation")
    parser.add_argument("--teacher", default="pretrained:mnist")
    parser.add_argument("--evaluations", nargs="+", type=int, default=[1, 2, 4])
    names = [name for name, _, _ in TEACHER_SAMPLERS]
    parser.add_argument("--teacher-samplers", nargs="+", default=names, choices=names)
    parser.add_argument("--reference-steps", type=int, default=20, help="also the teacher at this many (dpm++2m)")
    scoring_options(parser)
    args = parser.parse_args()
    if not (args.students or args.consistency):
        parser.error("give --students, --consistency or both")
    if args.quick:
        args.n, args.draws = 64, 1
    out, cache = lab_folder(args), Path(args.cache)

    def row(model: str, ckpt: str, evaluations: int, sampling: dict, draws: int) -> dict:
        draws = [Lab("few-steps", out, cache, n=args.n, seed=d, ckpt=ckpt) for d in range(draws)]
        m = draws[0].shipped("mnist")  # --ckpt stands for the MNIST model
        paths = [lab.samples(m, args.n, classes="data", **sampling) for lab in draws]
        scores = [lab.score(path, m.data) for lab, path in zip(draws, paths)]
        record = draws[0].sampling_record(paths[0])
        return {
            "data": m.data,
            "model": model,
            "evaluations": evaluations,
            "nfe": record["nfe"],
            **over_draws(scores),
            "kid": statistics.mean(s["kid"] for s in scores),
            "seconds": record["seconds"],
            "n": args.n,
            "draws": len(draws),
        }

    rows = []
    for k in sorted(args.evaluations, reverse=True):
        if args.students and (student := Path(args.students) / f"steps-{k}").exists():
            rows.append(row(f"student ({student})", str(student), k, {}, args.draws))
            print(json.dumps(rows[-1]), flush=True)
        if args.consistency:  # one student, any number of steps
            student = Path(args.consistency) / "consistency"
            rows.append(row(f"consistency student ({student})", str(student), k, {"steps": k}, args.draws))
            print(json.dumps(rows[-1]), flush=True)
        for i, (name, sampling, at) in enumerate(TEACHER_SAMPLERS):
            if name in args.teacher_samplers and (at is None or k in at):
                draws = args.draws if i == 0 else 1
                rows.append(row(f"teacher, {name}", args.teacher, k, {**sampling, "steps": k}, draws))
                print(json.dumps(rows[-1]), flush=True)
    steps = args.reference_steps
    rows.append(row("teacher, dpm++2m", args.teacher, steps, {"sampler": "dpm++2m", "steps": steps}, args.draws))
    print_table(
        rows,
        [("model", "model", "<40"), ("nfe", "NFE", ">5g"), ("fid", "FID", ">8.2f"), ("fid_spread", "+-", ">6.2f"),
         ("fid_floor", "floor", ">7.2f"), ("kid", "KID", ">9.4f"), ("seconds", f"s/{args.n}", ">9.1f")],
    )  # fmt: skip
    data = rows[0]["data"]
    write_json("few_steps" if data == "mnist" else f"few_steps_{data}", args.quick, rows=rows)


if __name__ == "__main__":
    main()
