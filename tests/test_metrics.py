import json

import numpy as np
import pytest
import torch
from helpers import FakeInception, digit_like_images

from tinydiff.cli import main
from tinydiff.errors import TinydiffError
from tinydiff.metrics import compare, fid, kid, precision_recall
from tinydiff.metrics import inception as inception_module
from tinydiff.metrics.fid import frechet_distance
from tinydiff.metrics.inception import preprocess
from tinydiff.metrics.kid import mmd2_unbiased
from tinydiff.metrics.reference import score


def _gauss(n, d=16, shift=0.0, scale=1.0, seed=0):
    return np.random.default_rng(seed).normal(shift, scale, (n, d))


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric():
    a, b = _gauss(500), _gauss(500, shift=0.3, seed=1)
    assert abs(fid(a, a)) < 1e-8
    assert fid(a, b) == pytest.approx(fid(b, a), rel=1e-9)
    assert fid(a, b) > 16 * 0.3**2 * 0.8


def test_fid_matches_an_independent_eigenvalue_computation():
    """Tr((S1 S2)^(1/2)) = sum of sqrt(eigenvalues of S1 S2), real and >= 0 for SPD S1, S2."""
    rng = np.random.default_rng(2)
    a = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12))
    b = rng.normal(0.5, 1, size=(300, 12)) @ rng.normal(size=(12, 12))
    mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
    mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
    trace_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(min=0)).sum()
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert fid(a, b) == pytest.approx(expected, rel=1e-8)


def test_fid_closed_form_for_diagonal_gaussians():
    mu1, mu2 = np.zeros(4), np.array([1.0, 0, 0, 2])
    v1, v2 = np.array([1.0, 2, 3, 4]), np.array([4.0, 2, 1, 1])
    expected = 5 + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_fid_survives_singular_covariances():
    a, b = _gauss(10, d=32), _gauss(10, d=32, seed=3)  # fewer samples than dimensions
    assert np.isfinite(fid(a, b))


@pytest.mark.parametrize("n1, n2, d", [(300, 200, 24), (12, 9, 64)])
def test_fid_from_features_equals_the_sqrtm_formula_on_their_statistics(n1, n2, d):
    """The nuclear-norm route (no matrix square root) against scipy's sqrtm of S1 S2 (pytorch-fid's
    computation), with more samples than dimensions and with fewer."""
    rng = np.random.default_rng(n1)
    a = rng.normal(size=(n1, d)) @ rng.normal(size=(d, d))
    b = rng.normal(0.3, 1.0, size=(n2, d)) @ rng.normal(size=(d, d))
    by_sqrtm = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False), eps=0)
    assert fid(a, b) == pytest.approx(by_sqrtm, rel=1e-6)


def test_mmd2_unbiased_equals_the_double_sum():
    x, y = _gauss(7, d=3), _gauss(7, d=3, shift=0.2, seed=4)
    k = lambda u, v: (u @ v / 3 + 1) ** 3  # noqa: E731
    m = len(x)
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    cross = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    assert mmd2_unbiased(x, y) == pytest.approx(within - 2 * cross, rel=1e-10)


def test_kid_spread_is_real_below_two_thousand_samples():
    """Subsets of half the set differ, so the spread over them is not zero (subsets of the whole set
    would all be equal); from 2,000 samples on, the subsets hold 1,000 as in clean-fid."""
    _, spread = kid(_gauss(300), _gauss(300, shift=0.2, seed=4))
    assert spread > 1e-4
    with pytest.raises(ValueError, match="four samples"):
        kid(_gauss(3), _gauss(3, seed=1))


def test_kid_is_unbiased_on_equal_distributions():
    """Over independent pairs of samples of one distribution, KID averages to ~0 (an unbiased MMD^2
    estimator), while a shifted distribution is clearly positive."""
    values = [kid(_gauss(200, seed=s), _gauss(200, seed=100 + s), num_subsets=5, subset_size=100)[0] for s in range(20)]
    assert abs(np.mean(values)) < 3 * np.std(values) / np.sqrt(len(values))
    shifted, _ = kid(_gauss(200), _gauss(200, shift=0.5, seed=9), num_subsets=5, subset_size=100)
    assert shifted > 10 * np.std(values)


def test_precision_recall_limits():
    real = _gauss(300, d=4)
    assert precision_recall(real, real) == (1.0, 1.0)
    far = _gauss(300, d=4, shift=50)
    assert precision_recall(real, far) == (0.0, 0.0)
    collapsed = real[:1] + 1e-3 * _gauss(30, d=4, seed=5)  # mode collapse: precise, poor recall
    precision, recall = precision_recall(real, collapsed)
    assert precision == 1.0 and recall < 0.5


def test_preprocessing_grayscale_and_rgb():
    gray = torch.from_numpy(digit_like_images(2, size=28))
    x = preprocess(gray)
    assert x.shape == (2, 3, 299, 299) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x[:, 0], x[:, 2])
    rgb = gray.expand(-1, 3, -1, -1).clone()
    rgb[:, 1] = 0
    y = preprocess(rgb)
    assert torch.equal(y[:, 0], x[:, 0]) and (y[:, 1] == -1).all()
    with pytest.raises(TinydiffError, match="uint8"):
        preprocess(gray.float())


def test_real_features_are_cached_per_dataset_split_and_n(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    x = digit_like_images(120, size=28)
    np.savez(
        cache / "mnist.npz",
        x_train=x[:80],
        y_train=np.zeros(80, np.int64),
        x_test=x[80:],
        y_test=np.zeros(40, np.int64),
    )
    extractor = FakeInception()
    first = score("mnist:test", "mnist:train", 20, ["fid", "kid"], extractor)
    assert extractor.calls == 3  # test draw 0, train draws 0 and 1 (the floor)
    again = score("mnist:test", "mnist", 20, ["fid", "kid"], extractor)
    assert extractor.calls == 3 and again["fid"] == first["fid"]
    assert {"fid", "fid_floor", "kid", "kid_floor", "n"} <= set(first) and first["n"] == 20
    assert len(list((cache / "features").glob("*.npy"))) == 3
    score("mnist:test", "mnist:train", 10, ["fid"], extractor)  # another n: new features
    assert extractor.calls == 6
    too_big = score("mnist:train", "mnist:test", 30, ["fid"], extractor)  # 2 x 30 > 40 test images
    assert "not available" in too_big["floor"]


def test_fid_command_prints_one_json_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(inception_module, "InceptionFeatures", FakeInception)
    np.savez(tmp_path / "a.npz", x=digit_like_images(40, size=28, seed=1))
    np.savez(tmp_path / "b.npz", x=digit_like_images(80, size=28, seed=2))
    args = ["fid", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--n", "40", "--metrics", "fid,kid,pr", "--json"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 40 and report["fid"] >= 0 and "fid_floor" in report and "precision" in report
    assert main(["fid", str(tmp_path / "a.npz"), str(tmp_path / "b.npz"), "--n", "50"]) == 2
    assert "too few for draw 1 of n = 50" in capsys.readouterr().err


def test_fid_reads_as_a_table_and_draws_give_the_spread(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(inception_module, "InceptionFeatures", FakeInception)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(a, x=digit_like_images(60, size=28, seed=1))
    np.savez(b, x=digit_like_images(80, size=28, seed=2))
    assert main(["fid", str(a), str(b), "--n", "20", "--draws", "3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    from tinydiff.metrics.reference import labelled_draw

    fake = FakeInception()  # each draw is a disjoint block of A, scored against B's draw 0
    reference = fake(labelled_draw(str(b), 20, 0).images)
    singles = [fid(fake(labelled_draw(str(a), 20, k).images), reference) for k in range(3)]
    assert report["draws"] == 3 and report["fid_draws"] == pytest.approx(singles)
    assert report["fid"] == pytest.approx(np.mean(singles)) and report["fid_spread"] == pytest.approx(
        np.std(singles, ddof=1)
    )
    assert len(set(report["fid_draws"])) == 3  # the draws differ
    capsys.readouterr()
    assert main(["fid", str(a), str(b), "--n", "20", "--draws", "2"]) == 0
    table = capsys.readouterr().out
    assert "n = 20 per set, 2 draws" in table and "FID" in table and "over draws" in table and "floor" in table
    assert main(["fid", str(a), str(b), "--n", "20", "--draws", "4"]) == 2  # 4 x 20 > 60 images
    assert "too few for draw 4 of n = 20" in capsys.readouterr().err


def test_fid_refuses_a_missing_set_before_computing_anything(tmp_path, monkeypatch, capsys):
    made = []
    monkeypatch.setattr(inception_module, "InceptionFeatures", lambda *a, **k: made.append(FakeInception()) or made[-1])
    np.savez(tmp_path / "a.npz", x=digit_like_images(40, size=28, seed=1))
    assert main(["fid", str(tmp_path / "a.npz"), str(tmp_path / "missing.npz"), "--n", "20"]) == 2
    assert "missing.npz does not exist" in capsys.readouterr().err
    assert all(extractor.calls == 0 for extractor in made)


def test_compare_rejects_unknown_metrics():
    with pytest.raises(ValueError, match="unknown metrics"):
        compare(_gauss(5), _gauss(5), ["fid", "is"])


@pytest.mark.slow
def test_real_inception_network_on_a_few_images():
    extractor = inception_module.InceptionFeatures(batch_size=4)
    gray = torch.from_numpy(digit_like_images(4, size=28))
    features = extractor(gray)
    assert features.shape == (4, 2048) and np.isfinite(features).all() and (features >= 0).all()
    np.testing.assert_allclose(extractor(gray.expand(-1, 3, -1, -1).contiguous()), features, rtol=1e-5)


def test_inception_score_limits_and_accuracy():
    from tinydiff.metrics.classifier import accuracy, inception_score

    confident_balanced = torch.eye(10, dtype=torch.float64).repeat(20, 1)
    assert inception_score(confident_balanced, splits=2)[0] == pytest.approx(10)
    uniform = torch.full((200, 10), 0.1, dtype=torch.float64)
    assert inception_score(uniform, splits=2)[0] == pytest.approx(1)
    one_class = torch.eye(10, dtype=torch.float64)[[3] * 200]
    assert inception_score(one_class, splits=2)[0] == pytest.approx(1)
    assert accuracy(confident_balanced, torch.arange(10).repeat(20)) == 1.0
    assert accuracy(confident_balanced, torch.zeros(200, dtype=torch.long)) == pytest.approx(0.1)


def test_shipped_classifier_loads_and_is_small():
    from tinydiff.metrics.classifier import class_probabilities, load_classifier, weights_path

    assert weights_path("mnist").stat().st_size < 1_000_000
    probabilities = class_probabilities(load_classifier("mnist"), torch.from_numpy(digit_like_images(5, size=28)))
    assert probabilities.shape == (5, 10)
    torch.testing.assert_close(probabilities.sum(1), torch.ones(5, dtype=torch.float64))
    with pytest.raises(TinydiffError, match="no classifier for 'cifar10'"):
        load_classifier("cifar10")
    with pytest.raises(TinydiffError, match=r"\[N, 1, 28, 28\]"):
        class_probabilities(load_classifier("mnist"), torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


@pytest.mark.slow
def test_shipped_mnist_classifier_accuracy():
    from tinydiff.data import load_dataset
    from tinydiff.metrics.classifier import accuracy, class_probabilities, load_classifier

    test = load_dataset("mnist:test")
    assert accuracy(class_probabilities(load_classifier("mnist"), test.images), test.labels) > 0.98


def test_eval_command_samples_a_checkpoint_and_scores_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(inception_module, "InceptionFeatures", FakeInception)
    data, run, out = tmp_path / "train.npz", tmp_path / "run", tmp_path / "s.npz"
    np.savez(data, x=digit_like_images(64, size=28))
    assert main(f"train --data {data} --out {run} --steps 2 --batch-size 8 --sample-grid 0".split()) == 0
    capsys.readouterr()
    assert main(f"eval --ckpt {run} --n 16 --steps 3 --out {out} --json".split()) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 16 and report["b"] == str(data) and "fid_floor" in report
    assert np.load(out)["x"].shape == (16, 28, 28, 1)


def test_conditional_accuracy_metric_reads_the_requested_classes(tmp_path):
    from tinydiff.metrics.classifier import class_probabilities, load_classifier

    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (40, 1, 28, 28), dtype=np.uint8))
    predicted = class_probabilities(load_classifier("mnist"), images).argmax(1)
    labels = predicted.clone()
    labels[:10] = (labels[:10] + 1) % 10  # a quarter asked for another class
    np.savez(tmp_path / "s.npz", x=images.permute(0, 2, 3, 1).numpy(), y=labels.numpy())
    report = score(str(tmp_path / "s.npz"), "mnist", 40, ["acc"], extractor=None, floor=False)
    assert report["accuracy"] == pytest.approx(0.75)
    np.savez(tmp_path / "unlabelled.npz", x=images.permute(0, 2, 3, 1).numpy())
    with pytest.raises(TinydiffError, match="needs class labels"):
        score(str(tmp_path / "unlabelled.npz"), "mnist", 40, ["acc"], extractor=None, floor=False)
