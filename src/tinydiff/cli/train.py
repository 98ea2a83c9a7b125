"""``tinydiff train``: its flags are TrainConfig's fields (config.py), each with the default, type and
help text declared there, plus --config (a JSON file of them), --print-config, --resume and --nproc; and
``tinydiff plot RUN``, the pictures of a run's log."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import typing
from pathlib import Path

from ..checkpoint import with_legacy_values
from ..config import TrainConfig, default_out, flag, validate
from ..errors import TinydiffError
from . import COUNT


def int_list(text: str) -> list[int]:
    """An argparse type: integers separated by commas (1,2,2)."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, e.g. 1,2,2; got {text!r}") from None


def _parse_type(hint) -> typing.Callable[[str], object]:
    """The argparse type of a TrainConfig field annotated ``hint`` (None, as a default, is never parsed)."""
    kinds = [h for h in typing.get_args(hint) if h is not type(None)] or [hint]
    kind = kinds[0]
    return int_list if typing.get_origin(kind) is list else kind


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field. The values are checked by config.validate (one line naming the
    flag), so argparse only parses them. A bool that defaults to False is a switch (--amp); one that
    defaults to True also has its negation (--no-clip-aware-loss); a flag named --no-X sets it False."""
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        name, help_text, default = flag(field), field.metadata["help"], field.default
        if hints[field.name] is bool:
            if name.startswith("--no-"):
                p.add_argument(name, dest=field.name, action="store_false", help=help_text)
            elif default:
                p.add_argument(name, action=argparse.BooleanOptionalAction, default=True, help=help_text)
            else:
                p.add_argument(name, action="store_true", help=help_text)
            continue
        choices, const = field.metadata["choices"], field.metadata["const"]
        metavar = "{" + ",".join(choices) + "}" if choices else None
        bare = {"nargs": "?", "const": const} if const is not None else {}  # e.g. --text alone: --text minilm
        p.add_argument(
            name, type=_parse_type(hints[field.name]), default=default, metavar=metavar, help=help_text, **bare
        )


def add_parser(sub, common) -> None:
    p = sub.add_parser("train", parents=[common], help="train a diffusion model")
    add_config_flags(p)
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="a JSON file of these options by field name (what --print-config writes; a checkpoint's config.json "
        "works too, by its train section); flags given beside it override it",
    )
    p.add_argument(
        "--print-config", action="store_true", help="print the run's options as JSON (for --config) and stop"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest checkpoint, with the config it recorded (flags given "
        "now may change only --steps, --minutes and the logging and checkpoint flags)",
    )
    p.add_argument(
        "--nproc",
        type=COUNT,
        default=1,
        help="data-parallel processes on this machine: runs this command under torchrun (see the README)",
    )
    p.set_defaults(func=run)
    p = sub.add_parser(
        "plot", parents=[common], help="a run's training curves as a PNG (loss, loss per t, lr, images/s)"
    )
    p.add_argument("run", help="a run directory (its log.jsonl)")
    p.add_argument("--out", default=None, help="the PNG (default: RUN/training.png, rewritten each time)")
    p.set_defaults(func=run_plot)


def config_file(path: str) -> dict:
    """The options of a --config file: TrainConfig fields by name, flat or as config.json's train section."""
    try:
        options = json.loads(Path(path).read_text())
    except OSError as err:
        raise TinydiffError(f"--config {path}: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise TinydiffError(f"--config {path} is not JSON ({err})") from None
    if isinstance(options, dict) and isinstance(options.get("train"), dict):
        options = with_legacy_values(options["train"])  # a checkpoint's config.json: a whole record
    if not isinstance(options, dict):
        raise TinydiffError(f"--config {path} must hold an object of training options")
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise TinydiffError(f"--config {path}: unknown options {', '.join(unknown)} (see tinydiff train --help)")
    return options


def given(argv: list[str]) -> set[str]:
    """The TrainConfig fields whose flags appear in ``argv`` (as --flag, --flag=value or negated)."""
    names = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    fields = set()
    for f in dataclasses.fields(TrainConfig):
        bare = flag(f).removeprefix("--").removeprefix("no-")  # --no-time and --time, --amp and --no-amp
        if {f"--{bare}", f"--no-{bare}"} & names:
            fields.add(f.name)
    return fields


def recorded_options(out: Path, options: dict, explicit: set[str]) -> dict:
    """Resume: the run's recorded train config, with the flags given now (``explicit``) on top; the
    trainer then refuses any of those that a run cannot change mid-way, naming both values."""
    from ..checkpoint import read_config, resolve_checkpoint

    if not (out / "latest").exists() and not any(out.glob("ckpt-*")):
        return options  # nothing to resume: the trainer says so
    recorded = read_config(resolve_checkpoint(out))["train"]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    merged = {k: v for k, v in recorded.items() if k in fields}
    merged.update({k: options[k] for k in explicit | {"out"}})
    return {**options, **merged}


def without_nproc(argv: list[str]) -> list[str]:
    """The command line minus ``--nproc N`` / ``--nproc=N`` (what each torchrun worker runs)."""
    out, skip = [], False
    for arg in argv:
        if not skip and arg != "--nproc" and not arg.startswith("--nproc="):
            out.append(arg)
        skip = arg == "--nproc"
    return out


def run(args) -> None:
    from ..api import train
    from ..training import distributed

    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        code = distributed.launch(args.nproc, without_nproc(args.argv))
        if code:
            raise SystemExit(code)
        return
    options = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    explicit = given(args.argv)
    if args.config:  # the file's options, with the flags given beside it on top
        recipe = config_file(args.config)
        options.update({k: v for k, v in recipe.items() if k not in explicit})
        explicit |= set(recipe)
    options["out"] = options["out"] or default_out(options["data"])
    if args.resume:
        options = recorded_options(Path(options["out"]), options, explicit)
    if args.print_config:
        config = TrainConfig(**options)
        validate(config)
        print(json.dumps(dataclasses.asdict(config), indent=2))
        return
    ckpt = train(resume=args.resume, progress=not args.quiet, **options)
    if ckpt is not None:  # rank 0 (or the only process)
        print(f"checkpoint: {ckpt}")
        if options["sample_grid"]:
            print(f"samples: {Path(options['out']) / 'samples.png'}")


def run_plot(args) -> None:
    from ..viz import plot_log

    log = Path(args.run) / "log.jsonl"
    if not log.is_file():
        raise TinydiffError(f"{log} does not exist: is {args.run} a training run?")
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    if not records:
        raise TinydiffError(f"{log} has no records yet (one is written every --log-every steps)")
    print(f"plot: {plot_log(records, args.out or Path(args.run) / 'training.png', title=str(args.run))}")
