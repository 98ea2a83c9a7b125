"""Soak test of crash safety: train while a driver SIGKILLs and resumes the run at random moments,
then check that the final weights are bit-identical to those of an uninterrupted run.

For --minutes, the driver runs legs of `tinydiff train` (the first fresh, the others --resume) on
`--data digits --preset nano` with a checkpoint every --ckpt-every steps, small so that saves are
frequent, and SIGKILLs each leg at a random moment of one of three kinds:
  save      while a checkpoint is being written (as soon as its .tmp-ckpt-* directory appears)
  training  after a random delay in [0, --max-delay] s once the leg has trained a step
  start-up  after a random delay in [0, --max-delay] s from its launch (maybe before training)
After each kill the newest checkpoint must load. A last leg then resumes to the end: the newest
checkpoint's step plus --tail steps. Training is budgeted by steps with a constant learning rate,
so any number of kills and resumes must give the weights of one straight run of the same steps,
bit for bit (one thread per process); the straight run is trained next and both are compared
(raw and EMA weights), as is the log (one record per step, in order).

    python benchmarks/soak.py [--minutes 30 --ckpt-every 2 --max-delay 2 --tail 20 --seed 0
        --json benchmarks/results/soak.json] [-- extra tinydiff train flags]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu

RECIPE = ["--data", "digits", "--preset", "nano", "--log-every", "1", "--sample-grid", "0", "--no-progress"]
RECIPE += ["--lr-schedule", "constant", "--device", "cpu"]  # a constant rate: --steps may change on resume
KINDS = {"save": 0.5, "training": 0.4, "start-up": 0.1}  # how often each kind of kill is drawn
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one thread: bitwise repeatable


def tinydiff(*args: str) -> list[str]:
    return [sys.executable, "-m", "tinydiff", *args]


def newest_step(run: Path) -> int:
    from tinydiff.checkpoint import list_checkpoints

    found = list_checkpoints(run)
    return int(found[-1].name.split("-")[1]) if found else 0


def temporaries(run: Path) -> set[str]:
    """The checkpoints being written (or left half-written by a kill): .tmp-ckpt-* directories."""
    return {path.name for path in run.glob(".tmp-ckpt-*")}


def wait_until(condition, proc: subprocess.Popen, poll_s: float) -> bool:
    """Poll ``condition`` until it holds (True) or the process ends (False)."""
    while not condition():
        if proc.poll() is not None:
            return False
        time.sleep(poll_s)
    return True


def kill_leg(run: Path, command: list[str], kind: str, max_delay: float, rng: random.Random) -> dict:
    """Start one leg, SIGKILL it at a moment of ``kind``, check that the newest checkpoint loads."""
    from tinydiff import load

    before, stale = newest_step(run), temporaries(run)
    started = time.perf_counter()
    proc = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    alive = True
    if kind == "start-up":
        time.sleep(rng.uniform(0, max_delay))
    else:  # once the leg has saved a checkpoint of its own (which also cleans up what earlier kills left)
        alive = wait_until(lambda: newest_step(run) > before, proc, 0.01)
        if alive and kind == "training":
            time.sleep(rng.uniform(0, max_delay))
        elif alive:  # kind == "save": as soon as the next save has begun
            stale = temporaries(run)
            alive = wait_until(lambda: temporaries(run) - stale, proc, 0.0005)
    if not alive or proc.poll() is not None:
        raise SystemExit(f"soak: a leg ended by itself ({proc.returncode}): {proc.communicate()[1].decode()}")
    proc.kill()
    proc.communicate()
    partial = bool(temporaries(run) - stale)  # the kill interrupted a save
    after = newest_step(run)
    loads = True
    if after:
        try:
            load(run, ema=True)
        except Exception as err:  # noqa: BLE001 - any failure to load is what the soak looks for
            loads = False
            print(f"soak: the newest checkpoint does not load after a kill: {err}", file=sys.stderr)
    seconds = round(time.perf_counter() - started, 2)
    return dict(
        kind=kind, seconds=seconds, step_before=before, step_after=after, partial_save=partial, newest_loads=loads
    )


def same_weights(run_a: Path, run_b: Path) -> dict[str, bool]:
    from tinydiff import load

    same = {}
    for name, ema in (("model", False), ("ema", True)):
        a, b = load(run_a, ema=ema).net.state_dict(), load(run_b, ema=ema).net.state_dict()
        same[name] = a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    return same


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=30.0, help="how long to kill and resume")
    p.add_argument("--ckpt-every", type=int, default=2, help="steps between checkpoints (small: saves are hit often)")
    p.add_argument("--max-delay", type=float, default=2.0, help="longest random delay before a kill, in seconds")
    p.add_argument("--tail", type=int, default=20, help="steps the last leg trains past the newest checkpoint")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill schedule")
    p.add_argument("--json", default="benchmarks/results/soak.json")
    args, extra = p.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    rng = random.Random(args.seed)
    subprocess.run(tinydiff("fetch", "digits"), env=ENV, check=True, capture_output=True)
    with tempfile.TemporaryDirectory() as tmp:
        run, straight = Path(tmp) / "soaked", Path(tmp) / "straight"
        train = tinydiff("train", "--out", str(run), *RECIPE, "--ckpt-every", str(args.ckpt_every), *extra)
        kills, end = [], time.perf_counter() + 60 * args.minutes
        started = time.perf_counter()
        while time.perf_counter() < end:
            kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
            resume = ["--resume"] if newest_step(run) else []
            kills.append(kill_leg(run, [*train, "--steps", "1000000000", *resume], kind, args.max_delay, rng))
            k = kills[-1]
            where = ", mid-save" if k["partial_save"] else ""
            print(
                f"kill {len(kills)} ({k['kind']}): step {k['step_before']} -> {k['step_after']}{where}", file=sys.stderr
            )
        steps = newest_step(run) + args.tail
        resumes = sum(1 for k in kills if k["step_before"]) + 1  # the legs that resumed, and the last one
        subprocess.run([*train, "--steps", str(steps), "--resume"], env=ENV, check=True, capture_output=True)
        soak_s = time.perf_counter() - started
        command = tinydiff("train", "--out", str(straight), *RECIPE, "--ckpt-every", str(10**9), *extra)
        subprocess.run([*command, "--steps", str(steps)], env=ENV, check=True, capture_output=True)
        same = same_weights(run, straight)
        logged = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    row = dict(
        minutes=round(soak_s / 60, 2),
        kills=len(kills),
        kills_by_kind={kind: sum(k["kind"] == kind for k in kills) for kind in KINDS},
        partial_saves=sum(k["partial_save"] for k in kills),
        resumes=resumes,
        steps=steps,
        newest_always_loaded=all(k["newest_loads"] for k in kills),
        log_one_record_per_step=logged == list(range(1, steps + 1)),
        identical_model=same["model"],
        identical_ema=same["ema"],
    )
    header = ["minutes", "kills (save / training / start-up)", "killed mid-save", "resumes", "steps"]
    header += ["newest always loaded", "log intact", "model identical", "EMA identical"]
    by_kind = " / ".join(str(n) for n in row["kills_by_kind"].values())
    cells = [row["minutes"], f"{row['kills']} ({by_kind})", row["partial_saves"], row["resumes"], steps]
    cells += [row["newest_always_loaded"], row["log_one_record_per_step"], same["model"], same["ema"]]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    print("| " + " | ".join(str(c) for c in cells) + " |")
    if args.json:
        meta = dict(command=" ".join(sys.argv), recipe=RECIPE + extra, ckpt_every=args.ckpt_every)
        meta.update(max_delay_s=args.max_delay, seed=args.seed, machine=cpu())
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(dict(meta=meta, result=row, kills=kills), indent=1) + "\n")
    if not (row["newest_always_loaded"] and row["log_one_record_per_step"] and same["model"] and same["ema"]):
        raise SystemExit("soak: FAILED")


if __name__ == "__main__":
    main()
