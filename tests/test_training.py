"""fit: learning, history, divergence and interruption handling, and exact resumption."""

import math

import numpy as np
import pytest

from minivae import VAE, to_numpy
from minivae.datasets import load_digits
from minivae.training import DivergedError, mean_elbo


@pytest.fixture(scope="module")
def digits():
    return load_digits("train")[0], load_digits("test")[0]


def small(backend="numpy", **kwargs):
    return VAE(64, hidden_dims=(64,), latent_dim=4, backend=backend, seed=1, **kwargs)


def test_fitting_lowers_the_test_negative_elbo(digits):
    x, x_test = digits
    model = small()
    before = -mean_elbo(model, x_test)
    model.fit(x, epochs=30, batch_size=64, progress=False, validation=x_test)
    after = -mean_elbo(model, x_test)
    assert before > 40 and after < 30, (before, after)
    assert len(model.history_) == 30
    row = model.history_[-1]
    assert {"epoch", "loss", "reconstruction", "kl", "kl_weight", "val_elbo", "seconds"} <= set(row)
    assert row["epoch"] == 30 and math.isclose(row["loss"], row["reconstruction"] + row["kl"], rel_tol=1e-9)
    assert math.isclose(-row["val_elbo"], after, rel_tol=1e-2)


def test_fit_runs_on_every_backend(digits, backend):
    model = small(backend)
    model.fit(digits[0][:200], epochs=2, batch_size=50, progress=False, validation=digits[1][:50])
    assert len(model.history_) == 2 and math.isfinite(model.history_[-1]["val_elbo"])


def test_resumed_training_is_bit_for_bit_identical(digits, tmp_path):
    x, x_test = digits[0][:300], digits[1][:60]
    straight = small()
    straight.fit(x, epochs=5, batch_size=32, progress=False, validation=x_test, binarize="dynamic")

    first = small()
    first.fit(x, epochs=3, batch_size=32, progress=False, validation=x_test, binarize="dynamic")
    first.save(tmp_path / "ckpt.npz")
    resumed = VAE.load(tmp_path / "ckpt.npz")
    resumed.fit(x, epochs=2, batch_size=32, progress=False, validation=x_test, binarize="dynamic")

    assert np.array_equal(to_numpy(resumed.flat_params), to_numpy(straight.flat_params))
    assert np.array_equal(to_numpy(resumed.optimizer_.state["v"]), to_numpy(straight.optimizer_.state["v"]))
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in straight.history_]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.history_] == strip


def test_divergence_names_the_step_and_keeps_the_last_good_parameters(digits, monkeypatch):
    model = small()
    snapshots = []
    real = model._forward_backward

    def failing(x, eps, *args):
        snapshots.append(model.flat_params.copy())
        if len(snapshots) == 7:
            return math.nan, math.nan, math.nan
        return real(x, eps, *args)

    monkeypatch.setattr(model, "_forward_backward", failing)
    with pytest.raises(DivergedError, match=r"epoch 2, step 2.*smaller learning rate"):
        model.fit(digits[0][:100], epochs=3, batch_size=20, progress=False)  # 5 steps per epoch
    assert np.array_equal(model.flat_params, snapshots[-1])  # untouched by the bad step
    assert len(model.history_) == 1


def test_a_non_finite_gradient_is_caught_too(digits, monkeypatch):
    model = small()
    real = model._forward_backward

    def bad_gradient(x, eps, *args):
        out = real(x, eps, *args)
        model.flat_grads[3] = np.inf
        return out

    monkeypatch.setattr(model, "_forward_backward", bad_gradient)
    before = model.flat_params.copy()
    with pytest.raises(DivergedError, match="epoch 1, step 1"):
        model.fit(digits[0][:50], epochs=1, progress=False)
    assert np.array_equal(model.flat_params, before)


def test_ctrl_c_stops_cleanly(digits, monkeypatch):
    model = small()
    real = model._forward_backward
    calls = []

    def interrupted(x, eps, *args):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return real(x, eps, *args)

    monkeypatch.setattr(model, "_forward_backward", interrupted)
    returned = model.fit(digits[0][:100], epochs=5, batch_size=20, progress=False)
    assert returned is model and len(model.history_) == 1
    assert np.all(np.isfinite(to_numpy(model.elbo(digits[1][:10]))))


def test_fit_checks_its_arguments(digits):
    model = small()
    for kwargs, message in [(dict(epochs=-1), "epochs"), (dict(batch_size=0), "batch_size"),
                            (dict(optimizer="lbfgs"), "unknown optimizer 'lbfgs'"),
                            (dict(lr=0), "lr must be"), (dict(binarize="static"), "unknown binarize"),
                            (dict(eval_batch_size=0), "eval_batch_size must be")]:
        with pytest.raises(ValueError, match=message):
            model.fit(digits[0][:10], **{"progress": False, **kwargs})
    with pytest.raises(ValueError, match="validation has 3 features"):
        model.fit(digits[0][:10], validation=np.zeros((2, 3)), progress=False)
    assert model.history_ == []  # every bad argument is refused before any training
    with pytest.raises(ValueError, match="batch_size must be"):
        mean_elbo(model, digits[0][:10], batch_size=0)


def test_sgd_also_trains(digits):
    x = digits[0][:300]
    model = small()
    before = -mean_elbo(model, x)
    model.fit(x, epochs=10, optimizer="sgd", lr=0.01, progress=False)
    assert -mean_elbo(model, x) < before - 5
