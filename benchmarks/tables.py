"""What the FID benchmarks share: the mean and spread of FID over draws, a printed table, the JSON."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from machine import cpu

RESULTS = Path(__file__).parent / "results"


def scoring_options(parser) -> None:
    """The options every FID benchmark takes: n per draw, draws, the cache of runs and samples, --quick."""
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--cache", default="runs/reproduce")
    parser.add_argument("--quick", action="store_true")


def lab_folder(args) -> Path:
    """A FID benchmark's Lab output folder: benchmarks/results, so that its cells (results/cells) are
    kept with the JSON and a later run, on any machine, computes only what is missing; for --quick,
    a folder in the cache."""
    return Path(args.cache) / "quick" if args.quick else RESULTS


def over_draws(scores: list[dict]) -> dict:
    """FID's mean and spread (None for one draw) over scores of disjoint draws, the floor of the first."""
    fids = [s["fid"] for s in scores]
    return {
        "fid": statistics.mean(fids),
        "fid_spread": statistics.stdev(fids) if len(fids) > 1 else None,
        "fid_floor": scores[0].get("fid_floor"),
    }


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> None:
    """One line per row: columns are (key, title, format spec with its width, e.g. ">8.2f"); None is '-'."""
    print("\n" + "".join(f"{title:{spec.split('.')[0].rstrip('dfgs') or ''}}" for _, title, spec in columns))
    for r in rows:
        cells = []
        for key, _, spec in columns:
            value = r.get(key)
            width = spec.split(".")[0].rstrip("dfgs")
            cells.append(f"{'-':{width}}" if value is None else f"{value:{spec}}")
        print("".join(cells))


def write_json(name: str, quick: bool, **payload) -> Path:
    """benchmarks/results/NAME.json (NAME_quick.json for a --quick run) with the machine named."""
    path = RESULTS / f"{name}_quick.json" if quick else RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": cpu(), **payload}, indent=2) + "\n")
    return path
