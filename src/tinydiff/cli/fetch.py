"""``tinydiff fetch``: download, verify and cache datasets and the Inception weights."""

from __future__ import annotations

import argparse

from ..data.fetch import DATASETS


def add_parser(sub, common) -> None:
    p = sub.add_parser("fetch", parents=[common], help="download, verify and cache datasets")
    p.add_argument("datasets", nargs="+", choices=[*DATASETS, "emoji", "inception"])
    p.add_argument("--force", action="store_true", help="fetch again even if cached")
    p.add_argument(
        "--system-packages",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="install a Debian package that holds a dataset (Fashion-MNIST offline) with apt-get without "
        "asking (--no-system-packages: never); by default, ask on the terminal",
    )
    p.set_defaults(func=run)


def run(args) -> None:
    from ..data.fetch import fetch
    from ..metrics.inception import fetch_inception

    for name in args.datasets:
        if name == "inception":
            print(fetch_inception(force=args.force))
        elif name == "emoji":
            from ..data.emoji import PACKAGES, fetch_emoji

            for style in PACKAGES:
                print(fetch_emoji(style, force=args.force))
        else:
            print(fetch(name, force=args.force, system_packages=args.system_packages))
