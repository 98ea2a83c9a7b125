"""The reproduction suite's workbench: what every experiment of ``tinydiff reproduce`` uses.

Every costly result is a *cell*, a JSON record computed once under a key made of everything that
decides it (the model, the sampler and its options, n, the seed, ...) and written atomically into
OUT/cells, beside the report it feeds. An interrupted run therefore continues where it stopped, two
experiments that need the same figure compute it once, and the cells travel with the report: on
another machine, or after the cache is gone, a run reads every recorded cell and computes only the
missing ones. The bulky files behind the cells (samples, Inception features, trained models) live
in the cache folder and are made again only when a missing cell needs them: a model an experiment
trained, its training recorded, is retrained only then (a run with a time budget ends at another
step on another machine). Samples are generated in chunks of ``CHUNK`` images, each chunk a file of
its own (seeded by its index), so even a long cell (DDPM with 1,000 steps) resumes mid-way; an
unfinished training is resumed.

Every score follows the project's protocol (metrics/reference.py): n generated images against the
first draw of n training images, the real-vs-real floor (a second draw) beside it.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_write

CHUNK = 256  # images per cached chunk of samples
# Cells that stand for a file in the cache, not a result: they stay in the cache with their files.
LOCAL = ("chunks",)
# Raise to invalidate every cached result after a change to what a cell computes (version 1's keys
# carry no version field, so that the results of the first version stay valid).
CACHE_VERSION = 1


class Pending(Exception):
    """A cell that is not in the cache, asked for by a run that only reports (``--cached-only``)."""


VERDICTS = ("reproduced", "partly", "not reproduced", "not reproducible here")


class Model:
    """A model an experiment uses: ``ident`` names it in cache keys and tables (a shipped model or a
    run the experiment trained); ``data``: the dataset spec it was trained on (the FID reference);
    ``train``: what training took (minutes, steps, images/s). The network (``model``) is made by
    ``make`` on first use, so that results already in the cells need neither its weights nor its
    training."""

    def __init__(self, ident: str, model, data: str, train: dict | None = None, *, make: Callable | None = None):
        self.ident, self.data, self.train = ident, data, dict(train or {})
        self._model, self._make = model, make

    @property
    def model(self):
        if self._model is None:
            self._model = self._make()
        return self._model


@dataclass
class Report:
    """What an experiment writes: docs/results/NAME.md and NAME.json."""

    title: str
    source: str  # the write-up(s) whose claims it checks, by title and author
    summary: str = ""  # what was done, in a sentence or two
    tables: list[tuple[str, list[dict], list[str]]] = field(default_factory=list)  # (caption, rows, columns)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)
    verdicts: dict[str, tuple[str, str, str, str]] = field(default_factory=dict)  # claim -> (seed, ours, verdict, why)
    notes: list[str] = field(default_factory=list)

    def table(self, caption: str, rows: list[dict], columns: list[str]) -> None:
        self.tables.append((caption, rows, [c for c in columns if any(c in row for row in rows)]))

    def verdict(self, claim: str, seed: str, ours: str, verdict: str, why: str) -> None:
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
        self.verdicts[claim] = (seed, ours, verdict, why)


def _slug(fields: dict) -> str:
    if CACHE_VERSION > 1:
        fields = {**fields, "cache_version": CACHE_VERSION}
    text = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def fmt(value) -> str:
    """A table cell: floats to 4 significant digits (3 decimals at most for big ones)."""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    if isinstance(value, list | tuple):
        return "(" + ", ".join(fmt(v) for v in value) + ")"
    return "-" if value is None else str(value)


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---:|" * len(columns)]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


class Lab:
    """One experiment's run: its output folder, the shared cache, the scale (n, training budget,
    quick) and the helpers that make cells, samples, scores and models."""

    def __init__(
        self,
        name: str,
        out: Path,
        cache: Path,
        *,
        n: int = 2048,
        budget_minutes: float = 10.0,
        quick: bool = False,
        seed: int = 0,
        ckpt: str | None = None,
        device: str = "cpu",
        cached_only: bool = False,
        log: Callable[[str], None] = print,
    ):
        self.name, self.out, self.cache = name, Path(out), Path(cache)
        self.cells = self.out / "cells"  # the records; the cache holds the files behind them
        self.n, self.budget_minutes, self.quick = n, budget_minutes, quick
        self.seed, self.ckpt, self.device, self.log = seed, ckpt, device, log
        self.cached_only, self.pending = cached_only, 0
        self.trains = False  # whether the experiment trains models of its own (its page states the budget)
        self.started = time.perf_counter()
        self.compute_seconds, self._depth = 0.0, 0  # what every result used took, cached or not
        self._counted: set[Path] = set()  # the records already in compute_seconds (each counts once)
        self._extractor = None
        self._records: dict[Path, dict] = {}  # samples file -> its sampling record
        self._deferred: dict[Path, Callable[[], dict]] = {}  # samples recorded, not on this machine: draws them

    def pick(self, full, quick):
        """``full`` normally, ``quick`` with --quick (a miniature of the same experiment)."""
        return quick if self.quick else full

    # -- cells ---------------------------------------------------------------------------------
    def cell(
        self, kind: str, key: dict, compute: Callable[[], dict], *, valid: bool = True, spent=lambda value: 0.0
    ) -> dict:
        """The record for (kind, key): read from the cache, or computed and stored. ``valid=False``:
        a record is there but what it stands for is not (a deleted file): compute it again.
        ``spent(value)``: seconds the value took before this call (a resumed training's earlier calls)."""
        folder = self.cache / "cells" if kind in LOCAL else self.cells
        path = folder / kind / f"{_slug(key)}.json"
        if path.exists() and valid:
            try:
                record = json.loads(path.read_text())
                if record.get("key") == json.loads(json.dumps(key, default=str)):
                    self._count(path, record.get("seconds", 0.0))
                    return record["value"]
            except (OSError, ValueError):
                pass  # a damaged record is computed again
        if self.cached_only:
            raise Pending(kind)
        began, self._depth = time.perf_counter(), self._depth + 1
        try:
            value = compute()
        finally:
            self._depth -= 1
        seconds = max(time.perf_counter() - began, spent(value))
        self._count(path, seconds)
        self._counted.add(path)  # computed inside another record: in that one's seconds already
        record = json.dumps({"key": key, "value": value, "seconds": seconds}, indent=1, default=str).encode()
        atomic_write(path, lambda f: f.write(record))
        return value

    def _count(self, path: Path, seconds: float) -> None:
        """Add a record's seconds to the experiment's compute time: once per record, and only for
        records read at the top level (a record computed inside another is in that one's seconds)."""
        if self._depth == 0 and path not in self._counted:
            self.compute_seconds += seconds
            self._counted.add(path)

    def attempt(self, compute: Callable, *args, **kwargs):
        """compute(*args, **kwargs), or None if it needs a cell that a --cached-only run does not
        compute (counted, and said in the report)."""
        try:
            return compute(*args, **kwargs)
        except Pending:
            self.pending += 1
            return None

    # -- models --------------------------------------------------------------------------------
    def shipped(self, name: str = "mnist") -> Model:
        """A shipped model (``--ckpt`` replaces the MNIST one); ``train``: what its training took."""
        from ..model import load

        path = self.ckpt if (self.ckpt and name == "mnist") else f"pretrained:{name}"
        model = load(path, device=self.device)
        # the weights' fingerprint: their float64 sum on the CPU (the same on every device)
        weights = sum(float(p.detach().cpu().double().sum()) for p in model.net.parameters())
        label = path if path.startswith("pretrained:") else "ckpt"  # not the path: it may be relative or absolute
        ident = f"{label}#{hashlib.sha256(repr(weights).encode()).hexdigest()[:8]}"
        return Model(ident, model, model.config["data"]["spec"], model.config.get("trained", {}))

    def trained(self, label: str, **options) -> Model:
        """A model trained for this experiment with ``options`` (TrainConfig fields) for
        ``minutes`` (default: the budget), reused if it exists, resumed if it was cut short; trained
        (again) only when something needs the network, not when its results are all in the cells."""
        from ..api import train
        from ..config import TrainConfig, recipe_of
        from ..model import load

        self.trains = True
        options.setdefault("minutes", self.budget_minutes)
        options.setdefault("steps", 10**6)
        options.setdefault("sample_grid", 0)
        options.setdefault("ckpt_every", 250)
        # keyed by every option the run will have, defaults included (a changed default trains
        # anew; config.recipe_of), and by where it trains (minutes buy other steps there)
        recipe = recipe_of(TrainConfig(**options)) | accelerator(options.get("device", self.device))
        run = self.cache / "models" / f"{label}-{_slug(recipe)}"
        done = run / "done.json"

        def fit() -> dict:
            """Train (or finish training) the run; what it took."""
            if not done.exists():
                self.log(f"training {label} ({', '.join(f'{k}={v}' for k, v in sorted(options.items()))}) in {run}")
                started = time.perf_counter()
                settings = {"device": self.device, **{k: v for k, v in options.items() if k != "data"}}
                train(options["data"], str(run), resume=(run / "latest").exists(), progress=False, **settings)
                steps = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
                last = next((r for r in reversed(steps) if "step" in r), {})
                summary = {"steps": last.get("step")}
                summary["elapsed_s"] = last.get("elapsed_s")  # every call's, a resumed run's earlier ones too
                summary["minutes_this_call"] = round((time.perf_counter() - started) / 60, 2)
                summary["cpu"] = _cpu()  # the machine whose minutes these are (its last call's, if resumed)
                atomic_write(done, lambda f: f.write(json.dumps(summary).encode()))
            parameters = sum(p.numel() for p in load(run, device="cpu").net.parameters())
            return {**json.loads(done.read_text()), "parameters": parameters, "batch_size": recipe["batch_size"]}

        def make():
            if not done.exists():
                if self.cached_only:
                    raise Pending("model")
                fit()  # recorded in the cells, absent from this machine's cache: trained again
            return load(run, device=self.device)

        summary = self.cell("models", {"run": run.name, **recipe}, fit, spent=lambda v: v.get("elapsed_s") or 0.0)
        if summary.get("elapsed_s") and summary.get("steps"):  # the run's mean (a log line's: its last window's)
            summary = {**summary, "images_per_s": summary["steps"] * recipe["batch_size"] / summary["elapsed_s"]}
        return Model(run.name, None, options["data"], summary, make=make)

    def averaged(self, m: Model, sigma_rel: float) -> Model:
        """``m``, a run trained here with posthoc_ema, with its weights averaged after training over a
        profile of relative length ``sigma_rel`` (training/posthoc.py) in place of its EMA."""

        def make():
            import copy

            from ..training.posthoc import reconstruct

            model = copy.deepcopy(m.model)  # m's network, trained (again) if this machine lacks the run
            model.net.load_state_dict(reconstruct(self.cache / "models" / m.ident, sigma_rel)[0])
            return model

        return Model(f"{m.ident}-sigma{sigma_rel:g}", None, m.data, m.train, make=make)

    def guide(self, m: Model) -> Model:
        """The guide of ``m``, a run trained here with guide_at: its EMA weights at that fraction of
        its budget (the run's ``guide`` folder), for autoguided samples (``samples(..., guide=)``)."""

        def make():
            from ..model import load

            guide = self.cache / "models" / m.ident / "guide"
            if not guide.exists():
                _ = m.model  # the run, trained (again) on a machine without it
            return load(guide, device=self.device)

        return Model(f"{m.ident}-guide", None, m.data, m.train, make=make)

    # -- samples and scores ----------------------------------------------------------------------
    def labels(self, m: Model, n: int, which: str | None = "data") -> torch.Tensor | None:
        """Labels for n samples of a conditional model: in the training data's class proportions
        (the protocol's default), every class in turn ("all") or none (the null class)."""
        from ..api import class_labels

        return class_labels(m.model, which, n)[0] if m.model.num_classes and which else None

    def samples(
        self, m: Model, n: int, *, classes: str | None = "data", prompts=None, guide: Model | None = None, **sampling
    ) -> Path:
        """n samples of m as one .npz (cached; read it with :meth:`load`): chunk k of CHUNK images
        is drawn with seed (seed, k), so a cut run resumes at the next chunk. ``sampling`` goes to
        api.sample (sampler, steps, eta, timesteps, guidance, ...); ``prompts`` (a text-conditioned
        model, in place of classes): image i gets prompts[i % len(prompts)]. Its record (a cell:
        :meth:`sampling_record`) has the seconds and the network evaluations per image; samples
        recorded but not on this machine are drawn again only when read. ``guide`` (e.g. :meth:`guide`)
        autoguides the samples; its evaluations count in the record's."""
        key = {"model": m.ident, "n": n, "classes": classes, "seed": self.seed, **sampling}
        if guide is not None:
            key["guide"] = guide.ident
        if prompts is not None:
            prompts, classes = list(prompts), None
            key.update(classes=None, prompts=prompts)
        path = self.cache / "samples" / f"{_slug(key)}.npz"

        def draw() -> dict:
            return self._draw(m, n, key, path, classes, prompts, guide, sampling)

        def recorded() -> dict:  # drawn for another output folder into the same cache: its record is beside it
            beside = path.with_suffix(".json")
            return json.loads(beside.read_text()) if path.exists() and beside.exists() else draw()

        self._records[path] = self.cell("samples", key, recorded)
        return self.external(path, n, draw)  # registered like a peer's samples: drawn again when read

    def _draw(self, m: Model, n: int, key: dict, path: Path, classes, prompts, guide, sampling: dict) -> dict:
        from ..api import sample
        from ..viz import save_npz

        slug = path.stem
        labels = self.labels(m, n, classes)
        parts = []
        for k, start in enumerate(range(0, n, CHUNK)):
            size = min(CHUNK, n - start)
            y = None if labels is None else labels[start : start + size]
            turn = None if prompts is None else [prompts[i % len(prompts)] for i in range(start, start + size)]

            def chunk(size=size, y=y, k=k, turn=turn):
                began = time.perf_counter()
                guiding = guide.model if guide is not None else None
                with m.model.count_evaluations(guiding) as count:  # the guide's evaluations too
                    seed = self.seed * 100_003 + k
                    x = sample(
                        m.model, size, seed=seed, labels=y, prompts=turn, batch_size=CHUNK, guide=guiding, **sampling
                    )
                save_npz(x, path.with_name(f".{slug}-{k}.npz"), y)  # before its cell: a cut run redoes it
                return {"seconds": time.perf_counter() - began, "nfe": count["images"] / size, "n": size}

            exists = path.with_name(f".{slug}-{k}.npz").exists()
            parts.append(self.cell("chunks", {**key, "chunk": k}, chunk, valid=exists))
            self.log(f"  {m.ident} {sampling}: {min(start + size, n)}/{n} images")
        files = [np.load(path.with_name(f".{slug}-{k}.npz")) for k in range(len(parts))]
        arrays = {"x": np.concatenate([f["x"] for f in files])}
        if labels is not None:
            arrays["y"] = labels.numpy()
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        record = {"seconds": sum(p["seconds"] for p in parts), "nfe": parts[0]["nfe"], "n": n}
        atomic_write(path.with_suffix(".json"), lambda f: f.write(json.dumps(record).encode()))
        atomic_write(path, lambda f: f.write(buffer.getvalue()))  # last: the .npz marks the samples done
        for k in range(len(parts)):
            path.with_name(f".{slug}-{k}.npz").unlink(missing_ok=True)
        return record

    def external(self, path: Path, n: int, draw: Callable[[], object]) -> Path:
        """n samples made by code outside the lab (a peer library's sampler), scored like ours:
        ``draw`` writes ``path``, and is called only when something reads a file this machine lacks."""
        self._records.setdefault(Path(path), {"n": n})
        if not Path(path).exists():
            self._deferred[Path(path)] = draw
        return Path(path)

    def load(self, path: Path) -> dict[str, np.ndarray]:
        """The arrays of a samples file (x: uint8 NHWC, y: labels), drawn again first if only its
        record is here."""
        self._materialize(path)
        with np.load(path) as f:
            return {k: f[k] for k in f.files}

    def _materialize(self, path: Path) -> None:
        path = Path(path)
        if not path.exists() and path in self._deferred:
            if self.cached_only:
                raise Pending("samples")
            self.log(f"drawing {path.name} again (its record is in {self.cells})")
            self._depth += 1  # recorded already: its seconds are counted once, by the record
            try:
                self._deferred[path]()
            finally:
                self._depth -= 1
            del self._deferred[path]

    def timing(self, m: Model, n: int, **sampling) -> float:
        """Seconds to sample n images in one batch (after a warm-up), on this CPU (cached per CPU
        model and thread count: take it when nothing else runs; a --cached-only run reads those of
        the machine that computed the page)."""
        from ..api import sample

        def measure():
            sample(m.model, 2, steps=2, **{k: v for k, v in sampling.items() if k not in ("steps", "timesteps")})
            began = time.perf_counter()
            sample(m.model, n, seed=self.seed, batch_size=n, labels=self.labels(m, n), **sampling).cpu()  # GPU: waits
            return {"seconds": time.perf_counter() - began}

        mine = self.machine()
        machine = {"cpu": mine["cpu"], "threads": mine["threads"], **accelerator(self.device)}
        key = {"model": m.ident, "n": n, **machine, **sampling}
        return self.cell("timing", key, measure)["seconds"]

    @functools.cached_property
    def computed_by(self) -> dict:
        """The page's last record (NAME.json, read once, when first needed) when this run computes
        nothing (--cached-only): its machine and its run's minutes stand, and its timings are read,
        not this machine's."""
        previous = self.out / f"{self.name}.json"
        return json.loads(previous.read_text()) if self.cached_only and previous.exists() else {}

    def machine(self) -> dict:
        """The machine whose figures the page shows: this one, or the one that computed the page."""
        here = {"cpu": _cpu(), "torch": torch.__version__, "threads": torch.get_num_threads()}
        return self.computed_by.get("machine", here)

    def sampling_record(self, path: Path) -> dict:
        """seconds (all chunks, summed), nfe per image and n of a samples file :meth:`samples` gave."""
        return self._records[path]

    @property
    def extractor(self):
        if self._extractor is None:
            from ..metrics.inception import InceptionFeatures

            self._extractor = InceptionFeatures(self.device, log=self.log)
        return self._extractor

    def score(self, path: Path, reference: str, metrics=("fid", "kid")) -> dict:
        """Metrics of a samples file against ``reference`` at the file's n, floor beside (cached)."""
        from ..metrics.reference import score

        n = self._records[path]["n"] if path in self._records else int(np.load(path)["x"].shape[0])
        metrics = list(metrics)

        def compute():
            self._materialize(path)
            extractor = self.extractor if set(metrics) - {"is", "acc"} else None
            report = score(str(path), reference, n, metrics, extractor, floor=True, log=self.log)
            return {k: v for k, v in report.items() if k not in ("a", "b", "weights", "preprocessing")}

        return self.cell("scores", {"samples": path.stem, "reference": reference, "n": n, "metrics": metrics}, compute)

    def features(self, path: Path) -> np.ndarray:
        """Inception features of a samples file (cached beside it)."""
        from ..metrics.reference import features

        cached = path.with_suffix(".features.npy")
        if not cached.exists():
            self._materialize(path)
            result = features(str(path), int(np.load(path)["x"].shape[0]), self.extractor, log=self.log)
            buffer = io.BytesIO()
            np.save(buffer, result.astype(np.float32))
            atomic_write(cached, lambda f: f.write(buffer.getvalue()))
        return np.load(cached).astype(np.float64)

    # -- output ----------------------------------------------------------------------------------
    def figure(self, name: str) -> Path:
        """Where figure ``name`` (e.g. "strip.png") goes: out/EXPERIMENT-name."""
        self.out.mkdir(parents=True, exist_ok=True)
        return self.out / f"{self.name}-{name}"

    @contextmanager
    def plot(self, report: Report, name: str, caption: str, ncols: int = 1, figsize=(5, 3.2)) -> Iterator[list]:
        """A matplotlib figure of ``ncols`` axes (yielded as a list): on leaving the block every axis
        gets a grid, the figure is written as out/EXPERIMENT-name and listed in ``report``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(1, ncols, figsize=figsize, squeeze=False)
        try:
            yield list(axes[0])
            for ax in axes[0]:
                ax.grid(alpha=0.3)
            figure.tight_layout()
            figure.savefig(self.figure(name), dpi=100)
        finally:
            plt.close(figure)
        report.figures.append((self.figure(name).name, caption))

    def cached_figure(self, name: str, key: dict) -> Path:
        """Where a figure drawn inside a cell goes, in the cache (copied out by :meth:`keep`)."""
        path = self.cache / "figures" / f"{_slug(key)}-{name}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def keep(self, cached: Path, name: str) -> str | None:
        """Copy a figure drawn inside a cell to the output folder; its file name there, or None."""
        if not cached.exists():  # drawn on another machine: its copy in the output folder stands
            return self.figure(name).name if self.figure(name).exists() else None
        self.figure(name).write_bytes(cached.read_bytes())
        return self.figure(name).name

    def write(self, report: Report, command: str) -> Path:
        """docs/results/NAME.md (our tables beside the seed's claims, the command, the verdicts) and
        NAME.json (every figure with its n)."""
        minutes = self.computed_by.get("minutes_this_run", round((time.perf_counter() - self.started) / 60, 2))
        scale = {"n": self.n, "budget_minutes": self.budget_minutes, "quick": self.quick, "seed": self.seed}
        machine = self.machine()
        data = {
            "experiment": self.name,
            "title": report.title,
            "source": report.source,
            "command": command,
            "scale": scale,
            "machine": machine,
            "minutes_this_run": minutes,
            "compute_minutes": round(self.compute_seconds / 60, 1),
            "verdicts": {c: dict(zip(("seed", "ours", "verdict", "why"), v)) for c, v in report.verdicts.items()},
            "tables": [{"caption": c, "columns": cols, "rows": rows} for c, rows, cols in report.tables],
            "figures": [{"file": f, "caption": c} for f, c in report.figures],
        }
        self.out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(data, indent=1, default=str) + "\n"
        atomic_write(self.out / f"{self.name}.json", lambda f: f.write(text.encode()))
        lines = [f"# {report.title}", "", f"Claims of {report.source}.", ""]
        lines += [report.summary, ""] if report.summary else []
        lines += ["```", command, "```", ""]
        quick = " (--quick: a miniature, not a result)" if self.quick else ""
        budget = f" and --budget-minutes {self.budget_minutes:g} (training per model)" if self.trains else ""
        lines += [f"Run with --n {self.n} (samples per score){budget}{quick}."]
        lines += [
            f"Machine: {machine['cpu']}, {machine['threads']} threads, torch {machine['torch']}; compute: "
            f"{self.compute_seconds / 60:.1f} minutes (every result this page uses, however many runs it took).",
            "",
        ]
        if report.verdicts:
            lines += ["| claim | the write-up | ours | verdict | why |", "|---|---|---|---|---|"]
            lines += [f"| {c} | {s} | {o} | **{v}** | {w} |" for c, (s, o, v, w) in report.verdicts.items()]
            lines.append("")
        for caption, rows, columns in report.tables:
            lines += [f"**{caption}**", "", markdown_table(rows, columns), ""]
        for file, caption in report.figures:
            lines += [f"![{caption}]({file})", "", f"*{caption}*", ""]
        if self.pending:
            report.notes.append(f"{self.pending} results are not computed yet (shown as -): run the command above.")
        lines += [f"- {note}" for note in report.notes]
        text = "\n".join(lines).rstrip() + "\n"
        path = self.out / f"{self.name}.md"
        atomic_write(path, lambda f: f.write(text.encode()))
        self.log(f"wrote {path} and {path.with_suffix('.json')} ({minutes} minutes)")
        return path


def accelerator(device: str) -> dict:
    """{"accelerator": its name} for a GPU (or other accelerator) device, {} for the CPU: what keys
    a timing or a run in minutes apart from the CPU's, the CPU's keys unchanged."""
    from ..config import resolve_device

    device = resolve_device(device)
    if device.type == "cpu":
        return {}
    return {"accelerator": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type}


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or sys.platform
