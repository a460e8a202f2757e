"""Figures across seeds: the standard error covers the seeds, the evaluation noise and the examples drawn."""

import numpy as np
import pytest

from minivae import VAE, seeds
from minivae.datasets import load_digits


def simulated(rng, S, N, mu=0.0, seed_sd=1.0, example_sd=2.0, noise_sd=1.0):
    """Per-example figures of S seeds' models: a fresh draw of examples, seeds and noise, around the true ``mu``."""
    examples = rng.normal(0, example_sd, N)
    offsets = rng.normal(0, seed_sd, S)
    return mu + offsets[:, None] + examples[None, :] + rng.normal(0, noise_sd, (S, N))


@pytest.mark.parametrize("seed_sd, example_sd", [(1.0, 0.1), (0.1, 2.0), (1.0, 2.0)])
def test_the_standard_error_covers_the_truth_as_often_as_it_claims(rng, seed_sd, example_sd):
    # 20 seeds, so that the seed part of the error is itself well estimated; 2000 repetitions of the whole study
    z = []
    for _ in range(2000):
        runs = seeds.SeedRuns(simulated(rng, 20, 50, 3.0, seed_sd, example_sd), tuple(range(20)), [])
        est = runs.estimate()
        z.append((est.mean - 3.0) / est.se)
    covered = np.mean(np.abs(z) < 1.96)
    assert 0.91 < covered < 0.98, covered  # about 0.95 (0.935 for a t with 19 degrees of freedom); SE 0.005


def test_one_models_evaluation_noise_alone_would_claim_far_too_much(rng):
    values = simulated(rng, 3, 300, seed_sd=2.0, example_sd=0.5, noise_sd=0.5)
    est = seeds.SeedRuns(values, (0, 1, 2), []).estimate()
    one_model_se = values[0].std(ddof=1) / np.sqrt(values.shape[1])
    assert est.se > 5 * one_model_se  # the spread between seeds dominates


def test_a_paired_comparison_finds_a_planted_gain_and_no_gain_where_there_is_none(rng):
    baseline = rng.normal(0, 3, 200)
    for gain in (0.0, 1.0):
        z = []
        for _ in range(500):
            runs = seeds.SeedRuns(baseline + gain + rng.normal(0, 0.3, (10, 1)) + rng.normal(0, 1, (10, 200)),
                                  tuple(range(10)), [])
            est = seeds.compare(runs, baseline)
            z.append((est.mean - gain) / est.se)
        assert 0.88 < np.mean(np.abs(z) < 1.96) < 0.99
    a = seeds.SeedRuns(baseline + 1 + rng.normal(0, 0.1, (3, 200)), (0, 1, 2), [])
    b = seeds.SeedRuns(baseline + rng.normal(0, 0.1, (3, 200)), (3, 4, 5), [])
    assert seeds.compare(a, b).exceeds(0.0) and not seeds.compare(b, a).exceeds(0.0)
    assert "(3 seeds each)" in str(seeds.compare(a, b)) and "(3 seeds)" in str(seeds.compare(a, baseline))
    assert "(3 and 2 seeds)" in str(seeds.compare(a, seeds.SeedRuns(b.values[:2], (3, 4), [])))


def test_seeds_give_different_models_and_the_figures_line_up():
    x, _ = load_digits("train")
    x_test, _ = load_digits("test")
    config = dict(input_dim=64, hidden_dims=(16,), latent_dim=2, likelihood="binomial", trials=16)
    runs = seeds.across_seeds(lambda s: seeds.trained(config, x[:300], s, epochs=2, batch_size=50),
                              lambda m: m.elbo(x_test[:40]), seeds=(0, 1))
    assert runs.values.shape == (2, 40) and not np.array_equal(runs.values[0], runs.values[1])
    assert not np.array_equal(runs.models[0].flat_params, runs.models[1].flat_params)
    est = runs.estimate()
    assert np.isfinite(est.se) and est.se > 0 and "2 seeds" in str(est)


def test_bad_seeds_and_measures_are_named():
    with pytest.raises(ValueError, match="at least two different seeds"):
        seeds.across_seeds(lambda s: None, lambda m: np.zeros(3), seeds=(1, 1))
    with pytest.raises(ValueError, match="one finite figure per example"):
        seeds.across_seeds(lambda s: None, lambda m: np.full(3, np.nan), seeds=(0, 1))
    runs = seeds.SeedRuns(np.zeros((2, 5)), (0, 1), [])
    with pytest.raises(ValueError, match="one figure per example, 5"):
        seeds.compare(runs, np.zeros(4))


def test_a_cached_model_is_the_one_training_gives(tmp_path, monkeypatch):
    x, _ = load_digits("train")
    config = dict(input_dim=64, hidden_dims=(8,), latent_dim=2, likelihood="binomial", trials=16)
    first = seeds.trained(config, x[:200], 3, cache=tmp_path, epochs=2, batch_size=50)
    fresh = seeds.trained(config, x[:200], 3, cache=False, epochs=2, batch_size=50)  # trained again
    assert np.array_equal(first.flat_params, fresh.flat_params)  # a seed fixes a run, so the cache is faithful

    def no_training(*args, **kwargs):
        raise AssertionError("the cached model should have been loaded")
    monkeypatch.setattr(VAE, "fit", no_training)
    again = seeds.trained(config, x[:200], 3, cache=tmp_path, epochs=2, batch_size=50)
    assert np.array_equal(again.flat_params, first.flat_params) and len(again.history_) == 2
    monkeypatch.setenv("MINIVAE_MODEL_CACHE", str(tmp_path))  # the suite's shared folder, found without cache=
    assert np.array_equal(seeds.trained(config, x[:200], 3, epochs=2, batch_size=50).flat_params, first.flat_params)
    other = x[200:300].copy()
    other[-1, -1] += 1 / 16  # one pixel of the validation set, far past what an array's repr shows
    monkeypatch.setattr(VAE, "fit", lambda self, x, **o: self)  # quick stand-in: keeps a file per key
    seeds.trained(config, x[:200], 3, cache=tmp_path, epochs=2, batch_size=50, validation=x[200:300])
    seeds.trained(config, x[:200], 3, cache=tmp_path, epochs=2, batch_size=50, validation=other)
    assert len(list(tmp_path.glob("vae-*.npz"))) == 3
    monkeypatch.setattr(VAE, "fit", no_training)
    for changed in (dict(seed=4), dict(epochs=3), dict(data=x[:199])):  # any change trains afresh
        with pytest.raises(AssertionError, match="should have been loaded"):
            seeds.trained(config, changed.get("data", x[:200]), changed.get("seed", 3), cache=tmp_path,
                          epochs=changed.get("epochs", 2), batch_size=50)
    assert len(list(tmp_path.glob("vae-*.npz"))) == 3
