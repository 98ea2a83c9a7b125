"""The command line (tinydiff VERB [options]): a thin layer over the Python API.

Verbs: fetch, train, plot, distill, sample, fid, eval, invert, interpolate, merge, reproduce, export,
serve. One module per verb (or group of verbs) adds its subcommands: ``add_parser(sub, common)``
declares their flags and sets ``func`` to the function that runs each. Problems with the user's input end in one line on
stderr and a non-zero exit; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import TinydiffError


def integer(low: int, high: float = float("inf")):
    """An argparse type: an integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            allowed = f">= {low}" if high == float("inf") else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be an integer {allowed}, got {value}")
        return value

    return parse


def finite(text: str) -> float:
    """An argparse type: a finite number (no nan, no inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


COUNT = integer(1)  # a positive count: images, steps, batch size, frames
SEED = integer(0, 2**32 - 1)


def writable_folder(folder: Path) -> None:
    """Create ``folder`` if needed; a TinydiffError if it cannot be made or written into."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TinydiffError(f"cannot create the folder {folder} for the output ({err.strerror or err})") from None
    if not os.access(folder, os.W_OK):
        raise TinydiffError(f"cannot write into {folder}")


def device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1, ...")


def output_options(
    p: argparse.ArgumentParser, what: str, default: str = "named after the model and options, in this folder"
) -> None:
    """--out and --overwrite of a verb that writes a file."""
    p.add_argument("--out", default=None, help=f"{what} (default: {default})")
    p.add_argument("--overwrite", action="store_true", help="replace output files that exist (else they are refused)")


def output_path(given: str | Path | None, default: str, overwrite: bool = False) -> Path:
    """Where a verb writes, never over an existing file by surprise: a path the user gave is refused
    if it exists (unless ``overwrite``); without one, ``default``, numbered (-2, -3, ...) when taken.
    Its folder is created and must be writable."""
    if given is not None:
        path = Path(given)
        if path.exists() and not overwrite:
            raise TinydiffError(f"{path} exists: pass --overwrite to replace it, or choose another path")
    else:
        path, number = Path(default), 1
        while path.exists():
            number += 1
            path = Path(default).with_name(f"{Path(default).stem}-{number}{Path(default).suffix}")
    writable_folder(path.parent)
    return path


def model_name(ckpt: str | None) -> str:
    """A checkpoint's name in output file names: pretrained-mnist, demo (runs/demo), demo-ckpt-000500,
    demo-guide."""
    if ckpt is None or str(ckpt).startswith("pretrained:"):
        return str(ckpt or "pretrained:mnist").replace(":", "-")
    path = Path(ckpt).resolve()
    return f"{path.parent.name}-{path.name}" if path.name.startswith("ckpt-") or path.name == "guide" else path.name


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad option reported in one line (and where to read about it) instead of the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from . import distill, evaluate, export, fetch, latent, reproduce, sample, serve, train  # each adds its verbs

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    common.add_argument(
        "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars or messages, results only"
    )
    from .. import __version__

    parser = _Parser(prog="tinydiff", parents=[common], description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"tinydiff {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for verbs in (fetch, train, distill, sample, evaluate, latent, reproduce, export, serve):
        verbs.add_parser(sub, common)
    for verb in sub.choices.values():  # --help shows every default
        verb.formatter_class = _DefaultsFormatter
    return parser


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """argparse's "(default: ...)" after each option that has one its help does not already state."""

    def _get_help_string(self, action):
        stated = action.default is None or "default" in (action.help or "")
        return action.help if stated else super()._get_help_string(action)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    args.debug = getattr(args, "debug", False)
    args.quiet = getattr(args, "quiet", False)
    try:
        args.func(args)
    except (TinydiffError, ValueError) as err:
        if args.debug:
            raise
        print(f"tinydiff: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tinydiff: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - one line for the user, the traceback with --debug
        if args.debug:
            raise
        print(f"tinydiff: unexpected {type(err).__name__}: {err} (rerun with --debug for details)", file=sys.stderr)
        return 1
    return 0
