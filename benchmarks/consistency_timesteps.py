"""The timesteps of multistep consistency sampling, chosen by FID: a greedy search (Song et al. 2023,
"Consistency Models", section 6: the intermediate noise levels of their two-step sampler came from a
greedy search of FID).

Multistep consistency sampling starts at the last timestep T - 1 and, at each later timestep of its
trajectory, puts fresh noise back on the student's x0 and asks again (samplers/consistency.py). The
trailing spacing puts the k timesteps at T - 1, T - 1 - T/k, ...; nothing says those are the best.
The search fixes the trajectory of k - 1 evaluations and tries every candidate timestep below its last
as the k-th (a grid of --grid, then its neighbours at half the spacing), keeping the best by FID at
--n (one draw): k = 2 tries the second timestep, k = 3 the third after the best second, and so on.
The trailing trajectory of each k is scored beside it. Cached like the other FID benchmarks: a cut run
continues. Prints a table per k, writes benchmarks/results/consistency_timesteps.json with the best
trajectory per number of evaluations.

    .venv/bin/python benchmarks/consistency_timesteps.py [--student pretrained:mnist-consistency]
        [--evaluations 4] [--grid 100] [--n 1024] [--quick]

--quick: n = 64 and a coarse grid: a check that it runs, not a result.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tables import lab_folder, print_table, scoring_options, write_json

from tinydiff.experiments.lab import Lab
from tinydiff.samplers import timesteps as default_timesteps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student", default="pretrained:mnist-consistency", help="a consistency-distilled checkpoint")
    parser.add_argument("--evaluations", type=int, default=4, help="search trajectories of 2 up to this many")
    parser.add_argument("--grid", type=int, default=100, help="the candidate timesteps' spacing")
    scoring_options(parser)
    parser.set_defaults(n=1024, draws=1)
    args = parser.parse_args()
    if args.quick:
        args.n, args.grid, args.evaluations = 64, 300, 3
    lab = Lab("consistency-timesteps", lab_folder(args), Path(args.cache), n=args.n, ckpt=args.student)
    m = lab.shipped("mnist")  # --ckpt stands for the MNIST model
    T = m.model.schedule.num_timesteps

    def fid(timesteps: list[int]) -> float:
        path = lab.samples(m, args.n, classes="data", sampler="consistency", timesteps=timesteps)
        return lab.score(path, m.data, ("fid",))["fid"]

    best, rows = [T - 1], []
    for k in range(2, args.evaluations + 1):
        last = best[-1]
        tried = {t: fid([*best, t]) for t in range(args.grid, last, args.grid)}
        if not tried:
            break
        chosen = min(tried, key=tried.get)
        for t in (chosen - args.grid // 2, chosen + args.grid // 2):  # its neighbours at half the spacing
            if 0 < t < last and t not in tried:
                tried[t] = fid([*best, t])
        chosen = min(tried, key=tried.get)
        trailing = default_timesteps("consistency", m.model.schedule, k, "trailing")
        rows += [{"evaluations": k, "timesteps": [*best, t], "fid": f, "chosen": t == chosen} for t, f in tried.items()]
        rows.append({"evaluations": k, "timesteps": trailing, "fid": fid(trailing), "chosen": False, "trailing": True})
        best.append(chosen)
        print(f"{k}: {best} FID {tried[chosen]:.2f}; trailing {trailing}: {rows[-1]['fid']:.2f}", flush=True)
    for row in rows:
        row["shown"] = "  " + ", ".join(map(str, row["timesteps"])) + (" (trailing)" if row.get("trailing") else "")
        row["mark"] = "best" if row["chosen"] else ""
    print_table(rows, [("evaluations", "NFE", ">4d"), ("shown", "  timesteps", "<30"), ("fid", "FID", ">8.2f"),
                       ("mark", "", ">6s")])  # fmt: skip
    best_by_k = {k: best[:k] for k in range(2, len(best) + 1)}
    write_json("consistency_timesteps", args.quick, student=args.student, n=args.n, rows=rows, best=best_by_k)


if __name__ == "__main__":
    main()
