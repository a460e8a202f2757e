"""fit: learning, history, divergence and interruption handling, and exact resumption."""

import contextlib
import math
import os
import signal

import numpy as np
import pytest

from minivae import VAE, to_numpy
from minivae.datasets import load_digits
from minivae.training import DivergedError, mean_elbo


@pytest.fixture(scope="module")
def digits():
    # binarised, so that the default Bernoulli likelihood is a pmf of them (grey levels would warn in every test)
    return tuple((load_digits(split)[0] > 0.5).astype(np.float32) for split in ("train", "test"))


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


@pytest.mark.parametrize("at, undone", [(7, 2), (6, 1)], ids=["mid-epoch", "first-step-of-epoch"])
def test_divergence_names_the_step_and_keeps_the_last_good_parameters(digits, monkeypatch, at, undone):
    model = small()
    snapshots = []
    real = model.forward_backward

    def failing(x, eps, *args):
        snapshots.append(model.flat_params.copy())
        if len(snapshots) == at:
            return np.full(3, math.nan)  # loss, rec, kl
        return real(x, eps, *args)

    monkeypatch.setattr(model, "forward_backward", failing)
    said = "that step and the one before it are undone" if undone == 2 else "that step is undone, so"
    with pytest.raises(DivergedError, match=rf"epoch 2, step {at - 5}; {said}.*Neither the data's scale nor the lr"
                       .replace("lr", "learning rate")):
        model.fit(digits[0][:100], epochs=3, batch_size=20, progress=False)  # 5 steps per epoch
    # a loss that is not finite condemns the parameters it was computed at, so the step that made them is undone
    # too, but never one of an earlier epoch, whose totals are in the history
    assert np.array_equal(model.flat_params, snapshots[-undone])
    assert len(model.history_) == 1 and model.partial_epoch_["step"] == at - 5 - undone
    assert model.optimizer_.t == at - undone


def test_divergence_names_its_likely_cause_before_the_fix():
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (64, 8)).astype(float)  # 8-bit pixels, not scaled
    model = VAE(8, hidden_dims=(8,), latent_dim=2, likelihood="gaussian", decoder_std=0.01, seed=0)
    with pytest.raises(DivergedError, match=r"Likely cause: the data reach \|x\| = 255.*divide by 255"):
        model.fit(grey, epochs=50, batch_size=16, lr=1.0, progress=False)
    model = VAE(8, hidden_dims=(8,), latent_dim=2, likelihood="binomial", trials=16, seed=0)
    with pytest.raises(DivergedError, match=r"Likely cause: lr=1e\+06 is far above Adam's usual range.*lr=1e-3"):
        model.fit(np.round(rng.random((64, 8)) * 16) / 16, epochs=50, batch_size=16, lr=1e6, progress=False)


def test_a_non_finite_gradient_is_caught_too(digits, monkeypatch):
    model = small()
    real = model.forward_backward

    def bad_gradient(x, eps, *args):
        out = real(x, eps, *args)
        model.flat_grads[3] = np.inf
        return out

    monkeypatch.setattr(model, "forward_backward", bad_gradient)
    before = model.flat_params.copy()
    with pytest.raises(DivergedError, match="epoch 1, step 1"):
        model.fit(digits[0][:50], epochs=1, progress=False)
    assert np.array_equal(model.flat_params, before)


def test_a_gradient_whose_square_overflows_is_caught_before_it_spoils_adam(digits, monkeypatch):
    model = small().fit(digits[0][:40], epochs=1, batch_size=20, progress=False)
    before = (model.flat_params.copy(), {k: v.copy() for k, v in model.optimizer_.state.items()})
    real = model.forward_backward

    def huge_gradient(x, eps, *args):
        out = real(x, eps, *args)
        model.flat_grads[3] = 1e20  # finite in float32, but its square is not
        return out

    monkeypatch.setattr(model, "forward_backward", huge_gradient)
    with pytest.raises(DivergedError, match="squares overflowed the optimiser's state.*undone"):
        model.fit(digits[0][:40], epochs=1, batch_size=20, progress=False)
    assert np.array_equal(model.flat_params, before[0])
    for name, value in before[1].items():
        assert np.array_equal(model.optimizer_.state[name], value), name  # finite, so the model can be saved


def test_ctrl_c_stops_cleanly(digits, monkeypatch):
    model = small()
    real = model.forward_backward
    calls = []

    def interrupted(x, eps, *args):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return real(x, eps, *args)

    monkeypatch.setattr(model, "forward_backward", interrupted)
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


def test_the_method_lists_the_same_options_as_the_function_it_calls():
    """``VAE.fit`` spells out ``training.fit``'s keywords so that ``help()`` and editors show them: same names, same defaults."""
    import inspect
    from minivae import training
    method = list(inspect.signature(VAE.fit).parameters.values())[1:]  # without self
    function = list(inspect.signature(training.fit).parameters.values())[1:]  # without model
    assert [(p.name, p.default, p.kind) for p in method] == [(p.name, p.default, p.kind) for p in function]
    with pytest.raises(TypeError, match="batchsize"):
        small().fit(np.zeros((4, 64)), batchsize=8)  # a misspelled option is refused, not ignored


def test_sgd_also_trains(digits):
    x = digits[0][:300]
    model = small()
    before = -mean_elbo(model, x)
    model.fit(x, epochs=10, optimizer="sgd", lr=0.01, progress=False)
    assert -mean_elbo(model, x) < before - 5


def a_signal_at_step(model, monkeypatch, signum, at):
    """Send ``signum`` to this process during the ``at``-th step's forward pass, as a user's kill would."""
    real, calls = model.forward_backward, []

    def forward_backward(*args):
        calls.append(1)
        if len(calls) == at:
            os.kill(os.getpid(), signum)
        return real(*args)

    monkeypatch.setattr(model, "forward_backward", forward_backward)


@contextlib.contextmanager
def handled_as(signum, handler):
    """Run the block with ``handler`` for ``signum`` (as a shell or nohup may have set it), then put back the old one."""
    previous = signal.signal(signum, handler)
    try:
        yield
    finally:
        signal.signal(signum, previous)


def usual_handler(signum):
    return signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_stop_signal_ends_the_step_saves_and_resumes_bit_for_bit(digits, tmp_path, monkeypatch, signum):
    with handled_as(signum, usual_handler(signum)):  # whatever this test process inherited (nohup ignores SIGHUP)
        stop_and_resume(digits, tmp_path, monkeypatch, signum)
        assert signal.getsignal(signum) is usual_handler(signum)  # handlers put back


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT], ids=lambda s: s.name)
def test_a_signal_the_process_ignores_stays_ignored(digits, monkeypatch, signum):
    # nohup ignores SIGHUP, and a shell starts background jobs with SIGINT ignored: training must not stop on them
    x = digits[0][:300]
    with handled_as(signum, signal.SIG_IGN):
        model = small()
        a_signal_at_step(model, monkeypatch, signum, at=5)
        model.fit(x, epochs=2, batch_size=32, progress=False)
        assert model.stopped_by_ is None and len(model.history_) == 2
        assert signal.getsignal(signum) is signal.SIG_IGN


def stop_and_resume(digits, tmp_path, monkeypatch, signum):
    x, x_test = digits[0][:300], digits[1][:60]
    options = dict(batch_size=32, progress=False, validation=x_test, binarize="dynamic")  # 10 steps an epoch
    straight = small().fit(x, epochs=4, **options)

    stopped = small()
    a_signal_at_step(stopped, monkeypatch, signum, at=17)
    stopped.fit(x, epochs=4, **options)
    assert stopped.stopped_by_ == signum.name
    assert len(stopped.history_) == 1 and stopped.partial_epoch_["step"] == 7  # step 17 completed, no more
    assert stopped.optimizer_.t == 17
    stopped.save(tmp_path / "stopped.npz")

    resumed = VAE.load(tmp_path / "stopped.npz").fit(x, epochs=3, **options)
    assert resumed.stopped_by_ is None and resumed.partial_epoch_ is None
    assert np.array_equal(to_numpy(resumed.flat_params), to_numpy(straight.flat_params))
    assert np.array_equal(to_numpy(resumed.optimizer_.state["m"]), to_numpy(straight.optimizer_.state["m"]))
    no_time = [{k: v for k, v in row.items() if k != "seconds"} for row in straight.history_]
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in resumed.history_] == no_time


def test_resuming_an_unfinished_epoch_needs_the_same_data_and_batch_size(digits, monkeypatch):
    model = small()
    a_signal_at_step(model, monkeypatch, signal.SIGTERM, at=3)
    model.fit(digits[0][:100], epochs=2, batch_size=20, progress=False)
    with pytest.raises(ValueError, match=r"middle of epoch 1.*batch_size=20 over 100 examples"):
        model.fit(digits[0][:100], epochs=1, batch_size=10, progress=False)
    model.partial_epoch_ = None  # the documented way to start afresh
    model.fit(digits[0][:100], epochs=1, batch_size=10, progress=False)
    assert len(model.history_) == 1


def test_an_update_that_fails_half_way_is_wholly_undone(digits, monkeypatch):
    from minivae import optim
    from minivae.speed import chunks
    monkeypatch.setenv("MINIVAE_FAST", "0")  # the NumPy path, whose update runs chunk by chunk
    monkeypatch.setattr(chunks, "CHUNK", 64)
    model = small().fit(digits[0][:100], epochs=1, batch_size=20, progress=False)
    opt = model.optimizer_
    before = (model.flat_params.copy(), opt.t, {k: v.copy() for k, v in opt.state.items()})
    rng_state = model.rng_.bit_generator.state
    real = optim.for_each_chunk

    def fails_half_way(n, fn, *args):  # a third of the chunks are updated, then memory runs out
        real(n // 3, fn, *args)
        raise MemoryError

    monkeypatch.setattr(optim, "for_each_chunk", fails_half_way)
    with pytest.raises(MemoryError):
        model.fit(digits[0][:100], epochs=1, batch_size=20, progress=False)
    assert np.array_equal(model.flat_params, before[0]) and opt.t == before[1]
    for name, value in before[2].items():
        assert np.array_equal(opt.state[name], value), name
    # the call completed no step, so it leaves the model as it found it: no place in an epoch, no order drawn
    assert model.partial_epoch_ is None and model.rng_.bit_generator.state == rng_state


def test_a_second_ctrl_c_lets_the_step_in_flight_finish(digits, monkeypatch):
    model = small()
    real, calls = model.forward_backward, []

    def forward_backward(*args):
        calls.append(1)
        if len(calls) == 8:  # Ctrl-C twice, in the middle of the eighth step
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args)

    monkeypatch.setattr(model, "forward_backward", forward_backward)
    with handled_as(signal.SIGINT, signal.default_int_handler):  # as in a terminal, whatever this process inherited
        model.fit(digits[0][:100], epochs=3, batch_size=20, progress=False)  # 5 steps an epoch
    assert model.stopped_by_ == "SIGINT" and model.optimizer_.t == 8
    assert len(model.history_) == 1 and model.partial_epoch_["step"] == 3
    assert np.all(np.isfinite(model.flat_params))


@pytest.mark.parametrize("lr, optimizer", [(1e39, "adam"), (1e4, "adam"), (10.0, "sgd")])
def test_divergence_leaves_the_last_good_parameters_and_optimiser_state(digits, monkeypatch, lr, optimizer):
    model = small().fit(digits[0][:60], epochs=1, batch_size=20, progress=False, optimizer=optimizer)
    opt, real_step = model.optimizer_, model.optimizer_.step
    before, after = [], []

    def state():
        return model.flat_params.copy(), opt.t, {k: v.copy() for k, v in opt.state.items()}

    def recorded_step(w, dw, saved=None):
        before.append(state())
        real_step(w, dw, saved=saved)
        after.append(state())

    monkeypatch.setattr(opt, "step", recorded_step)
    with pytest.raises(DivergedError, match=r"epoch \d+, step \d+; that step (and the one before it )?(is|are) "
                                            "undone") as error:
        model.fit(digits[0], epochs=5, lr=lr, optimizer=optimizer, progress=False)
    # the failing step's update is undone, whether the loss, the gradient or the updated parameters failed; where
    # the loss or the gradient failed, the step before it too: its parameters gave the loss that was not finite
    two = "the one before it" in str(error.value)
    assert len(before) == len(after) and two == (not str(error.value).startswith("the update"))
    params, t, state_arrays = before[-2 if two else -1]
    assert np.all(np.isfinite(model.flat_params)) and np.all(np.isfinite(model.elbo(digits[0][:100])))
    assert np.array_equal(model.flat_params, params) and opt.t == t
    assert state_arrays.keys() == opt.state.keys()
    for name, value in state_arrays.items():
        assert np.array_equal(opt.state[name], value), name


def test_the_first_parameters_that_overflow_are_caught_at_once(digits):
    model = small()
    with pytest.raises(DivergedError, match="epoch 1, step 1; that step is undone"):
        model.fit(digits[0], epochs=1, lr=1e39, progress=False)  # Adam moves every weight by about lr
    assert np.all(np.isfinite(model.flat_params)) and model.optimizer_ is None  # as if the call had not been made
    assert np.array_equal(model.flat_params, small().flat_params)


def test_evaluation_does_not_change_what_training_does(digits):
    x, x_test = digits[0][:200], digits[1][:50]
    plain = small().fit(x, epochs=2, batch_size=50, progress=False)
    validated = small().fit(x, epochs=2, batch_size=50, progress=False, validation=x_test)
    assert np.array_equal(plain.flat_params, validated.flat_params)

    busy = small().fit(x, epochs=1, batch_size=50, progress=False)
    busy.elbo(x_test), busy.sample(3), busy.log_likelihood(x_test[:5], n_samples=10)
    busy.fit(x, epochs=1, batch_size=50, progress=False)
    assert np.array_equal(busy.flat_params, plain.flat_params)


def test_mean_elbo_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="x is empty"):
        mean_elbo(small(), np.zeros((0, 64)))


@pytest.mark.parametrize("options", [{}, {"objective": "iwae", "n_samples": 3}, {"free_bits": 0.1}],
                         ids=["elbo", "iwae", "free-bits"])
def test_a_training_step_reads_from_the_device_once(strict, digits, options):
    """On a GPU every device-to-host read waits for all queued work; a step makes one, for its loss and checks."""
    transfers = {}
    for n in (320, 640):  # 10 and 20 steps of 32; the epoch's own bookkeeping is the same for both
        model = small("cupy")
        strict.counts.reset()
        model.fit(digits[0][:n], epochs=1, batch_size=32, progress=False, eval_batch_size=100, **options)
        transfers[n] = strict.counts.transfers
    assert transfers[640] - transfers[320] == 10


def strict_and_numpy_runs(run):
    """``run(backend)`` on NumPy and on the strict stand-in (where the noise is drawn ahead, see minivae.speed.noise)."""
    return run("numpy"), run("cupy")


def same_training(a, b):
    assert np.array_equal(to_numpy(a.flat_params), to_numpy(b.flat_params))
    assert a.rng_.bit_generator.state == b.rng_.bit_generator.state
    assert [{k: v for k, v in row.items() if k != "seconds"} for row in a.history_] == \
           [{k: v for k, v in row.items() if k != "seconds"} for row in b.history_]


@pytest.mark.parametrize("options", [{}, {"objective": "iwae", "n_samples": 3}, {"free_bits": 0.1}],
                         ids=["elbo", "iwae", "free-bits"])
def test_noise_drawn_ahead_is_the_noise_drawn_in_turn(strict, digits, monkeypatch, options):
    """On a GPU each step's noise is drawn during the step before; the draws, and so training, are NumPy's."""
    from minivae.speed.noise import NoiseAhead

    x = digits[0][:300]  # 9 steps of 32 and one of 12
    served_ahead, real_take = [], NoiseAhead.take

    def take(self, shape, following=None):
        served_ahead.append(self.pending is not None and self.pending[0] == shape)
        return real_take(self, shape, following)

    monkeypatch.setattr(NoiseAhead, "take", take)
    numpy_run, gpu_run = strict_and_numpy_runs(
        lambda backend: small(backend).fit(x, epochs=2, batch_size=32, progress=False, **options))
    same_training(numpy_run, gpu_run)
    assert served_ahead == [False] * 20 + ([False] + [True] * 9) * 2  # NumPy: none; the GPU: all but each epoch's first


def test_a_stop_while_noise_is_drawn_ahead_resumes_bit_for_bit(strict, digits, tmp_path, monkeypatch):
    """The draw made ahead for the step that never ran is undone, so the checkpoint holds the generator as it was."""
    x = digits[0][:300]

    def stopped_and_resumed(backend):
        model = small(backend)
        with handled_as(signal.SIGTERM, signal.SIG_DFL):
            a_signal_at_step(model, monkeypatch, signal.SIGTERM, at=13)
            model.fit(x, epochs=3, batch_size=32, progress=False)
        assert model.stopped_by_ == "SIGTERM" and model.partial_epoch_["step"] == 3
        model.save(tmp_path / f"{backend}.npz")
        return VAE.load(tmp_path / f"{backend}.npz", backend=backend).fit(x, epochs=2, batch_size=32, progress=False)

    straight = small().fit(x, epochs=3, batch_size=32, progress=False)
    for resumed in strict_and_numpy_runs(stopped_and_resumed):
        same_training(straight, resumed)


def test_an_undone_step_winds_back_the_noise_drawn_ahead(strict, digits, monkeypatch):
    def diverging(backend):
        model = small(backend)
        real, calls = model.forward_backward, []

        def failing(x, eps, *args):
            calls.append(1)
            if len(calls) == 7:
                return tuple(model.xp.asarray(math.nan) for _ in range(3))  # loss, rec, kl
            return real(x, eps, *args)

        monkeypatch.setattr(model, "forward_backward", failing)
        with pytest.raises(DivergedError, match=r"epoch 2, step 2"):
            model.fit(digits[0][:100], epochs=3, batch_size=20, progress=False)
        return model

    numpy_run, gpu_run = strict_and_numpy_runs(diverging)
    same_training(numpy_run, gpu_run)  # the generator as it was before the undone step's noise, on both


def test_training_on_real_cupy_draws_what_numpy_draws(real_cupy, digits):
    """With the noise drawn ahead on a helper thread, a GPU run still leaves the generator where NumPy's does."""
    x = digits[0][:300]
    runs = [small(backend).fit(x, epochs=2, batch_size=32, progress=False) for backend in ("numpy", "cupy")]
    assert runs[0].rng_.bit_generator.state == runs[1].rng_.bit_generator.state
    assert math.isclose(runs[0].history_[0]["loss"], runs[1].history_[0]["loss"], rel_tol=1e-4)  # the same eps


def test_an_objective_in_capitals_trains_that_objective(digits):
    x = digits[0][:100]
    runs = [small().fit(x, epochs=1, batch_size=50, progress=False, objective=name, n_samples=3).flat_params
            for name in ("IWAE", "iwae")]
    assert np.array_equal(*runs)
    elbo = small().fit(x, epochs=1, batch_size=50, progress=False).flat_params
    assert not np.array_equal(runs[0], elbo)
    # and its checks apply: the bound in capitals has no KL term for beta or free bits to act on either
    for model, options in ((small(beta=4.0), {}), (small(), {"free_bits": 0.5})):
        with pytest.raises(ValueError, match="importance-weighted bound has no"):
            model.fit(x, epochs=1, progress=False, objective="IWAE", n_samples=3, **options)
    with pytest.raises(ValueError, match="is the importance-weighted bound's"):
        small().loss_and_grads(x[:5], objective="ELBO", n_samples=3)
    iwae = small().loss_and_grads(x[:5], eps=np.zeros((3, 5, 4)), objective="IWAE", n_samples=3)[0]
    assert iwae == small().loss_and_grads(x[:5], eps=np.zeros((3, 5, 4)), objective="iwae", n_samples=3)[0]


def state_of(model):
    return (model.flat_params.copy(), model.optimizer_, model.partial_epoch_, model.rng_.bit_generator.state,
            len(model.history_))


def same_state(a, b):
    return np.array_equal(a[0], b[0]) and a[1:] == b[1:]


@pytest.mark.parametrize("options, message", [
    ({"objective": "iwae", "n_samples": 10**9}, "needs about .* GiB, more than this machine can give"),
    ({"objective": "iwae", "n_samples": 2**63}, "lower n_samples or batch_size"),
    ({"epochs": 10**30}, "would not end in a lifetime"),
])
def test_a_call_refused_before_training_leaves_the_model_as_it_was(digits, options, message):
    model = small()
    before = state_of(model)
    with pytest.raises(ValueError, match=message):
        model.fit(digits[0][:50], **{"epochs": 1, "progress": False, **options})
    assert same_state(state_of(model), before)
    model.fit(digits[0][:50], epochs=1, batch_size=10, progress=False)  # and a later fit is not refused


def test_a_first_step_that_fails_leaves_the_model_as_it_was(digits, monkeypatch):
    model = small()
    before = state_of(model)

    def out_of_memory(*args):
        raise MemoryError
    monkeypatch.setattr(model, "forward_backward", out_of_memory)
    with pytest.raises(MemoryError):
        model.fit(digits[0][:50], epochs=1, batch_size=10, progress=False)
    assert same_state(state_of(model), before)  # no optimiser made, no generator drawn, no place in an epoch


def test_a_bad_blas_setting_leaves_no_optimiser(digits, monkeypatch):
    monkeypatch.setenv("MINIVAE_BLAS_THREADS", "abc")
    model = small()
    with pytest.raises(ValueError, match="MINIVAE_BLAS_THREADS"):
        model.fit(digits[0][:50], epochs=1, progress=False)
    assert model.optimizer_ is None


def test_one_label_for_every_example_trains_a_conditional_model(digits):
    model = VAE(64, hidden_dims=(8,), latent_dim=2, likelihood="binomial", trials=16, n_classes=3, seed=0)
    with pytest.raises(ValueError, match="labels in 0..2"):
        model.fit(digits[0][:50], y=3, epochs=1, progress=False)
    assert model.history_ == [] and model.optimizer_ is None
    model.fit(digits[0][:50], y=1, epochs=1, progress=False)
    assert len(model.history_) == 1
    with pytest.raises(ValueError, match="a pair \\(x_val, y_val\\)"):
        model.fit(digits[0][:50], y=1, epochs=1, progress=False, validation=(digits[1][:10],))
    masked = np.ma.array([0, 1, 2, 1], mask=[0, 0, 0, 1])
    with pytest.raises(ValueError, match="masked array with 1 masked labels"):
        model.fit(digits[0][:4], y=masked, epochs=1, progress=False)
    assert len(model.history_) == 1


def test_labels_cost_memory_in_proportion_to_the_examples_not_the_classes_squared():
    import tracemalloc
    model = VAE(64, hidden_dims=(8,), latent_dim=2, n_classes=30000, seed=0)  # an identity would be 3.6 GB
    tracemalloc.start()
    model.sample(2, y=1)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50 * 2**20, peak  # the model's own 30000 x 8 weights are under 1 MB
