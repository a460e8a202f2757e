"""The BLAS thread choice: one thread for small products, the faster setting by measurement for large ones."""

import time

import numpy as np
import pytest

from minivae import VAE, blas


def big():
    return VAE(784, hidden_dims=(400,), latent_dim=20)  # 128 x 784 x 400 = 4e7 multiply-adds a product


def test_small_products_always_run_on_one_thread():
    choice = blas.StepThreads(VAE(64, hidden_dims=(256,), latent_dim=2), batch_size=64)  # the digits
    choice.start_epoch(100)
    assert choice.fixed == "one" and choice.trials == []


@pytest.mark.parametrize("slow", ["one", "default"])
def test_large_products_run_on_the_setting_that_measured_faster(monkeypatch, slow):
    choice = blas.StepThreads(big(), batch_size=128)
    choice.start_epoch(100)
    assert choice.trials == ["one", "default"] * blas.TRIAL_STEPS
    clock = iter(range(10**6))
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    for _ in range(2 * blas.TRIAL_STEPS):
        setting = choice.trials[0]
        with choice.step():
            if setting == slow:  # the slow setting's steps take 10 ticks more
                for _ in range(10):
                    time.perf_counter()
    assert choice.trials == [] and choice.choice == ("default" if slow == "one" else "one")
    choice.start_epoch(100)  # each epoch measures afresh
    assert choice.choice == "one" and len(choice.trials) == 2 * blas.TRIAL_STEPS


def test_an_epoch_too_short_for_the_trial_runs_on_one_thread():
    choice = blas.StepThreads(big(), batch_size=128)
    choice.start_epoch(4 * blas.TRIAL_STEPS - 1)
    assert choice.trials == [] and choice.choice == "one"


@pytest.mark.parametrize("value, fixed", [("1", "one"), ("default", "default"), ("auto", None), (" AUTO ", None)])
def test_the_setting_can_be_forced(monkeypatch, value, fixed):
    monkeypatch.setenv("MINIVAE_BLAS_THREADS", value)
    assert blas.StepThreads(big(), batch_size=128).fixed == fixed


def test_a_bad_setting_is_named(monkeypatch):
    monkeypatch.setenv("MINIVAE_BLAS_THREADS", "4")
    with pytest.raises(ValueError, match="MINIVAE_BLAS_THREADS must be auto, 1 or default; got '4'"):
        big().fit(np.zeros((8, 784)), epochs=1, progress=False)


def test_the_limit_holds_only_while_minivae_computes():
    from threadpoolctl import threadpool_info
    blas_libs = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
    if not blas_libs or blas_libs[0]["num_threads"] < 2:
        pytest.skip("the BLAS library runs one thread here anyway")
    before = blas_libs[0]["num_threads"]
    with blas.one_thread():
        assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"][0] == 1
    assert [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"][0] == before
