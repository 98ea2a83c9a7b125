"""``tinydiff reproduce NAME|all``: the seed write-ups' claims, one experiment each (experiments/),
written as NAME.md, NAME.json and PNGs; every result is recorded in OUT/cells as it completes, so a
cut run continues where it stopped, here or on another machine."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ..errors import TinydiffError
from . import SEED, device_option, finite, integer


def add_parser(sub, common) -> None:
    from ..experiments import experiments

    names = list(experiments())
    p = sub.add_parser("reproduce", parents=[common], help="the seed write-ups' experiments: tables, figures, verdicts")
    p.add_argument("experiment", choices=[*names, "all"], metavar="NAME", help=f"one of: {', '.join(names)}, or all")
    p.add_argument(
        "--out", default="results", help="folder for NAME.md, NAME.json, the figures and cells/ (every result's record)"
    )
    p.add_argument("--summary", default=None, help="where the index of every claim goes (default OUT/REPRODUCTION.md)")
    p.add_argument(
        "--cache", default="runs/reproduce", help="folder of the samples and trained models behind the cells"
    )
    p.add_argument("--n", type=integer(16), default=2048, help="samples per score (the floor is given at the same n)")
    p.add_argument(
        "--budget-minutes", type=finite, default=10.0, help="training minutes per model an experiment trains"
    )
    p.add_argument("--quick", action="store_true", help="a miniature of each experiment, in seconds (not a result)")
    p.add_argument("--cached-only", action="store_true", help="write the tables from OUT/cells; compute nothing")
    p.add_argument("--ckpt", default=None, help="use this MNIST model instead of pretrained:mnist")
    p.add_argument("--seed", type=SEED, default=0)
    device_option(p)
    p.set_defaults(func=run)


def run(args) -> None:
    from ..experiments import experiments
    from ..experiments.lab import Lab
    from ..experiments.summary import write_summary
    from ..files import note

    registry = experiments()
    names = list(registry) if args.experiment == "all" else [args.experiment]
    if args.budget_minutes <= 0:
        raise ValueError(f"--budget-minutes must be positive, got {args.budget_minutes:g}")
    out = Path(args.out)
    failed = []
    for name in names:
        print(f"== {name}: {registry[name].summary}", file=sys.stderr)
        lab = Lab(
            name,
            out,
            Path(args.cache),
            n=args.n,
            budget_minutes=args.budget_minutes,
            quick=args.quick,
            seed=args.seed,
            ckpt=args.ckpt,
            device=args.device,
            cached_only=args.cached_only,
            log=note,
        )
        argv = [a for a in args.argv[1:] if a not in (args.experiment, "--cached-only")]
        try:
            lab.write(registry[name].run(lab), shlex.join(["tinydiff", "reproduce", name, *argv]))
        except (TinydiffError, ValueError, RuntimeError, OSError) as err:
            if len(names) == 1:
                raise
            failed.append(name)
            print(f"tinydiff: {name} failed: {err}", file=sys.stderr)
    print(f"summary: {write_summary(out, args.summary)}")
    if failed:
        raise TinydiffError(f"{len(failed)} experiments failed: {', '.join(failed)} (their messages are above)")
