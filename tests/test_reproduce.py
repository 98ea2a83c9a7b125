"""`tinydiff reproduce`: every experiment runs end to end in its --quick miniature (on stand-in
datasets and a stand-in for the Inception network), writes its page, JSON and figures and a verdict
per claim; results are cached as cells, so a cut run resumes and --cached-only recomputes nothing."""

import json

import numpy as np
import pytest
import torch
from helpers import digit_like_images, stand_in_emoji

import tinydiff.api as api
import tinydiff.experiments.lab as lab_module
from tinydiff.cli import main
from tinydiff.experiments import experiments
from tinydiff.experiments.lab import CHUNK, Lab, Pending, Report
from tinydiff.experiments.summary import CLAIMS, ELSEWHERE
from tinydiff.metrics import inception as inception_module


class PixelFeatures:
    """A stand-in for the Inception network: pixel statistics as features."""

    weights_hash = "pixels"

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, images, progress=False):
        x = images.float().flatten(1)
        return torch.stack([x.mean(1), x.std(1), x[:, ::7].mean(1), x.max(1).values], 1).double().numpy()


def _fake_dataset(cache, name, size, n_train, n_test):
    x = digit_like_images(n_train + n_test, size=size)
    y = np.arange(n_train + n_test) % 10
    np.savez(cache / f"{name}.npz", x_train=x[:n_train], y_train=y[:n_train], x_test=x[n_train:], y_test=y[n_train:])


@pytest.fixture
def stand_ins(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    for name in ("mnist", "fashion-mnist"):
        _fake_dataset(cache, name, 28, 600, 500)
    _fake_dataset(cache, "digits", 8, 400, 100)
    stand_in_emoji(cache)
    monkeypatch.setattr(inception_module, "InceptionFeatures", PixelFeatures)
    torch.set_num_threads(2)
    return tmp_path


def test_every_experiment_runs_quick_and_writes_its_page_and_verdicts(stand_ins, monkeypatch):
    out, cache = stand_ins / "results", stand_ins / "reproduce"
    assert main(["reproduce", "all", "--quick", "--out", str(out), "--cache", str(cache)]) == 0
    registry = experiments()
    assert sorted(c for e in registry.values() for c in e.claims) == sorted(set(CLAIMS) - set(ELSEWHERE))
    for name, entry in registry.items():
        record = json.loads((out / f"{name}.json").read_text())
        assert record["scale"]["quick"] and record["command"].startswith(f"tinydiff reproduce {name} ")
        assert set(record["verdicts"]) == set(entry.claims), name
        for figure in record["figures"]:
            assert (out / figure["file"]).stat().st_size > 100, figure
        page = (out / f"{name}.md").read_text()
        assert all(f"| {claim} |" in page for claim in entry.claims)
    assert "distilled student" in (out / "ddpm-vs-ddim.md").read_text()  # the shipped model's student
    summary = (out / "REPRODUCTION.md").read_text()
    assert all(f"| {claim} |" in summary for claim in CLAIMS)
    assert summary.count("not run yet") == sum("not run yet" in why for why in ELSEWHERE.values())
    # the tally under the table counts the verdicts in it
    counts = {v: summary.count(f"| **{v}** (quick):") for v in ("reproduced", "partly", "not reproduced")}
    assert sum(counts.values()) == len(CLAIMS) - len(ELSEWHERE)
    line = next(line for line in summary.splitlines() if line.startswith(f"Of the {len(CLAIMS)} claims: "))
    assert sorted(line.split(": ", 1)[1].rstrip(".").split(", ")) == sorted(f"{c} {v}" for v, c in counts.items() if c)
    # everything is recorded: a report-only run recomputes nothing and writes the same verdicts, and so
    # does a run on another machine (the same OUT/cells, an empty cache) without training or sampling
    before = {name: json.loads((out / f"{name}.json").read_text())["verdicts"] for name in registry}
    assert main(["reproduce", "all", "--quick", "--cached-only", "--out", str(out), "--cache", str(cache)]) == 0
    assert before == {name: json.loads((out / f"{name}.json").read_text())["verdicts"] for name in registry}
    calls = []
    for name in ("train", "sample"):
        monkeypatch.setattr(api, name, lambda *a, _n=name, **k: calls.append(_n))
    assert main(["reproduce", "all", "--quick", "--out", str(out), "--cache", str(stand_ins / "empty")]) == 0
    assert before == {name: json.loads((out / f"{name}.json").read_text())["verdicts"] for name in registry}
    assert calls == []


def test_another_model_replaces_the_shipped_one_without_its_student(stand_ins):
    out, cache = stand_ins / "results", stand_ins / "reproduce"
    args = ["reproduce", "ddpm-vs-ddim", "--quick", "--ckpt", "pretrained:mnist-2step", "--out", str(out)]
    assert main([*args, "--cache", str(cache)]) == 0
    page = (out / "ddpm-vs-ddim.md").read_text()
    assert "The model of --ckpt" in page and "distilled student" not in page and "| ddim S = 5 |" in page


def test_cached_only_on_an_empty_cache_writes_pending_tables(stand_ins, capsys):
    out = stand_ins / "results"
    args = ["reproduce", "ddpm-vs-ddim", "--quick", "--cached-only", "--out", str(out), "--cache", str(stand_ins / "c")]
    assert main(args) == 0
    page = (out / "ddpm-vs-ddim.md").read_text()
    assert "not computed yet" in page and json.loads((out / "ddpm-vs-ddim.json").read_text())["verdicts"] == {}


def test_a_cut_sampling_run_resumes_at_its_next_chunk_with_the_same_images(stand_ins, monkeypatch):
    lab = Lab("t", stand_ins / "out", stand_ins / "cache-a", quick=True)
    m = lab.shipped("mnist")
    n = CHUNK + 5
    calls = []
    original = api.sample

    def cut_after_one(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(api, "sample", cut_after_one)
    with pytest.raises(KeyboardInterrupt):
        lab.samples(m, n, sampler="ddim", steps=2)
    monkeypatch.setattr(api, "sample", original)
    resumed = np.load(lab.samples(m, n, sampler="ddim", steps=2))["x"]
    assert calls == [CHUNK, 5]
    fresh = Lab("t", stand_ins / "out-b", stand_ins / "cache-b", quick=True)
    assert np.array_equal(resumed, fresh.load(fresh.samples(m, n, sampler="ddim", steps=2))["x"])
    # a cell is computed once, then read back; a report-only lab never computes one
    assert lab.cell("k", {"a": 1}, lambda: {"v": 1}) == lab.cell("k", {"a": 1}, lambda: {"v": 2}) == {"v": 1}
    with pytest.raises(Pending):
        Lab("t", stand_ins / "out", stand_ins / "cache-a", cached_only=True).cell("k", {"a": 2}, lambda: {})
    # a training resumed by this call counts the seconds of every call (its log's elapsed_s)
    before = lab.compute_seconds
    lab.cell("models", {"run": "r"}, lambda: {"steps": 2, "elapsed_s": 600.0}, spent=lambda v: v["elapsed_s"])
    assert lab.compute_seconds - before >= 600
    # a record read again (two results of one page use it) counts once in the page's compute time
    reader = Lab("t", stand_ins / "out", stand_ins / "cache-a", cached_only=True)
    reader.cell("models", {"run": "r"}, lambda: {})
    once = reader.compute_seconds
    reader.cell("models", {"run": "r"}, lambda: {})
    assert once >= 600 and reader.compute_seconds == once


def test_the_cells_carry_a_run_to_a_machine_without_its_cache(stand_ins, monkeypatch):
    """OUT/cells alone (a report's records, on a machine with an empty cache) gives every recorded
    result again without training, sampling or scoring; reading the samples draws them again, after
    training the model again, and gives the same images."""
    out = stand_ins / "results"
    recipe = {"data": "digits", "steps": 2, "minutes": None, "batch_size": 8, "log_every": 1}
    first = Lab("t", out, stand_ins / "cache-a", quick=True)
    m = first.trained("m", **recipe)
    assert m.train["steps"] == 2 and m.train["elapsed_s"] > 0
    assert m.train["images_per_s"] == pytest.approx(2 * 8 / m.train["elapsed_s"])  # the run's mean, not its last step's
    assert m.train["cpu"] == first.machine()["cpu"]  # whose minutes they are: the benchmark's rows name it
    path = first.samples(m, 8, sampler="ddim", steps=2)
    score, images = first.score(path, m.data, ("fid",)), first.load(path)["x"]
    calls = []
    for name in ("train", "sample"):
        original = getattr(api, name)
        monkeypatch.setattr(api, name, lambda *a, _f=original, _n=name, **k: calls.append(_n) or _f(*a, **k))
    second = Lab("t", out, stand_ins / "cache-b", quick=True)  # another machine: the same cells, no cache
    m2 = second.trained("m", **recipe)
    path2 = second.samples(m2, 8, sampler="ddim", steps=2)
    assert second.score(path2, m2.data, ("fid",)) == score
    assert second.sampling_record(path2) == first.sampling_record(path)
    assert calls == [] and not path2.exists()
    assert np.array_equal(second.load(path2)["x"], images) and calls == ["train", "sample"]
    third = Lab("t", out, stand_ins / "cache-c", quick=True, cached_only=True)
    path3 = third.samples(third.trained("m", **recipe), 8, sampler="ddim", steps=2)
    with pytest.raises(Pending):  # a report-only run never draws them
        third.load(path3)
    # a timing is this CPU's; a report-only run on another CPU reads that of the machine its page names
    seconds = first.timing(m, 4, sampler="ddim", steps=2)
    first.write(Report("t", "s"), "tinydiff reproduce t")
    computed = {k: json.loads((out / "t.json").read_text())[k] for k in ("machine", "minutes_this_run")}
    monkeypatch.setattr(lab_module, "_cpu", lambda: "another CPU")
    assert third.timing(m, 4, sampler="ddim", steps=2) == seconds
    third.write(Report("t", "s"), "tinydiff reproduce t")
    assert {k: json.loads((out / "t.json").read_text())[k] for k in computed} == computed  # what computed it stands
    # minutes buy other steps on an accelerator: its runs are its own, never the CPU's cells
    with pytest.raises(Pending):
        Lab("t", out, stand_ins / "cache-c", quick=True, cached_only=True, device="meta").trained("m", **recipe)


def test_reproduce_refuses_an_unknown_experiment_and_a_bad_budget(stand_ins, capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "no-such-thing"])
    assert "invalid choice" in capsys.readouterr().err
    assert main(["reproduce", "forward", "--budget-minutes", "0", "--out", str(stand_ins / "r")]) == 2
