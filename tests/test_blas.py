"""The BLAS thread choice: by the problem's shape, so that a seed fixes a run; by measurement only when asked."""

import contextlib
import time

import numpy as np
import pytest

from minivae import VAE
from minivae.speed import blas


def big():
    return VAE(784, hidden_dims=(400,), latent_dim=20)  # 128 x 784 x 400 = 4e7 multiply-adds a product


def test_small_products_always_run_on_one_thread():
    choice = blas.StepThreads(VAE(64, hidden_dims=(256,), latent_dim=2), batch_size=64)  # the digits
    choice.start_epoch(100)
    assert choice.fixed == "one" and choice.trials == []


@pytest.mark.parametrize("slow", ["one", "default"])
def test_measure_runs_large_products_on_the_setting_that_measured_faster(monkeypatch, slow):
    monkeypatch.setenv("MINIVAE_BLAS_THREADS", "measure")
    choice = blas.StepThreads(big(), batch_size=128)
    choice.start_epoch(100)
    trial = 2 * (blas.TRIAL_STEPS + blas.UNTIMED_STEPS)
    assert choice.trials == ["one", "default"] * (trial // 2)
    clock = iter(range(10**6))
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    for i in range(trial):
        setting = choice.trials[0]
        with choice.step():
            # the slow setting's steps take 10 ticks more; the first step (untimed) pays 1000 for one-off costs
            for _ in range(10 * (setting == slow) + 1000 * (i == 0)):
                time.perf_counter()
    assert choice.trials == [] and choice.choice == ("default" if slow == "one" else "one")
    assert all(len(t) == blas.TRIAL_STEPS for t in choice.times.values())
    choice.start_epoch(100)  # each epoch measures afresh
    assert choice.choice == "one" and len(choice.trials) == trial


def run_steps(choice, n, ticks):
    """``n`` steps, each taking ``ticks[setting]`` ticks of the patched clock beyond the step's own two."""
    for _ in range(n):
        setting = choice.trials[0] if choice.trials else choice.choice
        with choice.step():
            for _ in range(ticks[setting]):
                time.perf_counter()


def test_a_default_that_stalls_after_the_trial_gives_way_to_one_thread(monkeypatch):
    monkeypatch.setenv("MINIVAE_BLAS_THREADS", "measure")
    choice = blas.StepThreads(big(), batch_size=128)
    choice.start_epoch(500)
    clock = iter(range(10**7))
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    run_steps(choice, 2 * (blas.TRIAL_STEPS + blas.UNTIMED_STEPS), {"one": 10, "default": 5})
    assert choice.choice == "default"
    run_steps(choice, 3 * choice.WATCH, {"one": 10, "default": 8})  # still faster: kept
    assert choice.choice == "default"
    run_steps(choice, choice.WATCH - 1, {"one": 10, "default": 30})  # the machine got busy
    assert choice.choice == "default"  # checked every WATCH steps
    run_steps(choice, 1, {"one": 10, "default": 30})
    assert choice.choice == "one"


def test_the_trial_compares_means_so_a_few_stalls_count(monkeypatch):
    monkeypatch.setenv("MINIVAE_BLAS_THREADS", "measure")
    choice = blas.StepThreads(big(), batch_size=128)
    choice.start_epoch(100)
    choice.times = {"one": [10.0] * blas.TRIAL_STEPS, "default": [5.0] * (blas.TRIAL_STEPS - 1)}
    choice.trials, choice.untimed = ["default"], 0
    clock = iter([0.0, 100.0])  # the last trial step stalls: the median would still favour the default
    monkeypatch.setattr(time, "perf_counter", lambda: next(clock))
    with choice.step():
        pass
    assert choice.choice == "one"


def test_an_epoch_too_short_for_the_trial_runs_on_one_thread(monkeypatch):
    monkeypatch.setenv("MINIVAE_BLAS_THREADS", "measure")
    choice = blas.StepThreads(big(), batch_size=128)
    choice.start_epoch(4 * (blas.TRIAL_STEPS + blas.UNTIMED_STEPS) - 1)
    assert choice.trials == [] and choice.choice == "one"


@pytest.mark.parametrize("value, fixed", [("1", "one"), ("default", "default"), ("auto", "default"), (" AUTO ", "default"),
                                          ("measure", None)])
def test_the_setting_can_be_forced(monkeypatch, value, fixed):
    monkeypatch.setenv("MINIVAE_BLAS_THREADS", value)
    assert blas.StepThreads(big(), batch_size=128).fixed == fixed


def test_a_bad_setting_is_named(monkeypatch):
    monkeypatch.setenv("MINIVAE_BLAS_THREADS", "4")
    with pytest.raises(ValueError, match="MINIVAE_BLAS_THREADS must be auto, 1, default or measure; got '4'"):
        big().fit(np.zeros((8, 784)), epochs=1, progress=False)


def test_a_seed_fixes_a_run_however_busy_the_machine(monkeypatch):
    # what a busy machine changes is how long a step takes on one thread against the library's threads: make
    # the steps on one thread a thousand ticks slower, then those on the library's, and train the same seed on
    # an MNIST-sized product each way
    x = (np.random.default_rng(0).random((2560, 784), dtype=np.float32) < 0.13).astype(np.float32)  # 20 steps
    real_one_thread, real_step, on_one, clock, runs = blas.one_thread, VAE.forward_backward, [], [0], []

    @contextlib.contextmanager
    def one_thread():
        on_one.append(True)
        with real_one_thread():
            yield
        on_one.pop()

    def tick():
        clock[0] += 1
        return clock[0]
    monkeypatch.setattr(blas, "one_thread", one_thread)
    monkeypatch.setattr(time, "perf_counter", tick)
    for slow_on_one in (True, False):
        def forward_backward(self, *args, slow_on_one=slow_on_one, **kwargs):
            clock[0] += 1000 * (bool(on_one) == slow_on_one)
            return real_step(self, *args, **kwargs)
        monkeypatch.setattr(VAE, "forward_backward", forward_backward)
        model = VAE(784, hidden_dims=(400,), latent_dim=20, seed=0).fit(x, epochs=1, batch_size=128, progress=False)
        runs.append(model.flat_params.copy())
    assert np.array_equal(*runs)


def test_the_limit_holds_only_while_minivae_computes():
    from threadpoolctl import threadpool_info

    def numpys_blas():  # the library NumPy's products call (SciPy, once imported, brings its own)
        libs = [lib for lib in threadpool_info() if lib["user_api"] == "blas"]
        return next((lib for lib in libs if "numpy" in lib["filepath"]), libs[0] if libs else None)
    if numpys_blas() is None or numpys_blas()["num_threads"] < 2:
        pytest.skip("the BLAS library runs one thread here anyway")
    before = numpys_blas()["num_threads"]
    with blas.one_thread():
        assert numpys_blas()["num_threads"] == 1
        with blas.one_thread():  # inside another: it sets nothing, and leaving it restores nothing
            assert numpys_blas()["num_threads"] == 1
        assert numpys_blas()["num_threads"] == 1
    assert numpys_blas()["num_threads"] == before
    model = VAE(64, hidden_dims=(16,), latent_dim=2, seed=0)  # its products are small: one thread throughout fit
    model.fit((np.random.default_rng(0).random((64, 64)) > 0.5).astype(float), epochs=1, batch_size=16, progress=False)
    assert numpys_blas()["num_threads"] == before
