"""``tinydiff fetch``: download, verify and cache datasets and the Inception weights."""

from __future__ import annotations

from ..data.fetch import DATASETS


def add_parser(sub, common) -> None:
    p = sub.add_parser("fetch", parents=[common], help="download, verify and cache datasets")
    p.add_argument("datasets", nargs="+", choices=[*DATASETS, "inception"])
    p.add_argument("--force", action="store_true", help="fetch again even if cached")
    p.set_defaults(func=run)


def run(args) -> None:
    from ..data.fetch import fetch
    from ..metrics.inception import fetch_inception

    for name in args.datasets:
        print(fetch_inception(force=args.force) if name == "inception" else fetch(name, force=args.force))
