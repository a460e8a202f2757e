"""Optimisers against their update rules written out step by step."""

import sys

import numpy as np
import pytest

from minivae.speed import fused
from minivae.backend import to_numpy
from minivae.optim import SGD, Adam, UndoRecord


@pytest.fixture(params=["numpy", "fused"])
def path(request, monkeypatch):
    """Run a test on the NumPy update, then on the compiled one (skipped, with the reason, without numba)."""
    if request.param == "fused" and not fused.AVAILABLE:
        pytest.skip("the fast extra (numba) is not installed: pip install 'minivae[fast]'")
    monkeypatch.setenv("MINIVAE_FAST", "1" if request.param == "fused" else "0")
    assert fused.enabled() == (request.param == "fused")
    return request.param


@pytest.fixture
def numpy_path(monkeypatch):
    """The NumPy update, whose chunking and threads some tests are about."""
    monkeypatch.setenv("MINIVAE_FAST", "0")


def test_adam_matches_the_textbook_update(path, rng):
    w = rng.standard_normal(5)
    w_ref = w.copy()
    m = np.zeros(5)
    v = np.zeros(5)
    opt = Adam(lr=0.01)
    for t in range(1, 6):
        g = rng.standard_normal(5)
        opt.step(w, g.copy())
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g**2
        m_hat, v_hat = m / (1 - 0.9**t), v / (1 - 0.999**t)
        w_ref -= 0.01 * m_hat / (np.sqrt(v_hat) + 1e-8)
    assert np.allclose(w, w_ref, rtol=1e-12, atol=1e-14)


def test_sgd_momentum_matches_its_rule(path, rng):
    w = rng.standard_normal(4)
    w_ref, vel = w.copy(), np.zeros(4)
    opt = SGD(lr=0.1, momentum=0.5)
    for _ in range(4):
        g = rng.standard_normal(4)
        opt.step(w, g)
        vel = 0.5 * vel + g
        w_ref -= 0.1 * vel
    assert np.allclose(w, w_ref, rtol=1e-13)


def test_plain_sgd(path, rng):
    w = np.ones(3)
    SGD(lr=0.5, momentum=0).step(w, np.array([1.0, 2.0, -2.0]))
    assert np.array_equal(w, [0.5, 0.0, 2.0])


def test_adam_minimises_a_quadratic(path):
    w = np.array([3.0, -2.0])
    opt = Adam(lr=0.05)
    for _ in range(500):
        opt.step(w, 2 * w)  # d/dw |w|^2
    assert np.abs(w).max() < 1e-2


def test_state_lives_on_the_parameters_backend(strict):
    w = strict.asarray(np.ones(3))
    opt = Adam()
    opt.step(w, strict.asarray(np.ones(3)))
    assert isinstance(opt.state["m"], strict.ndarray) and isinstance(opt.state["v"], strict.ndarray)
    opt.to(np)
    assert isinstance(opt.state["m"], np.ndarray)
    assert np.allclose(to_numpy(opt.state["m"]), 0.1)


def test_state_dict_round_trip(path, rng):
    w1 = rng.standard_normal(3)
    w2 = w1.copy()
    a, b = Adam(lr=0.01), Adam(lr=0.01)
    a.step(w1, np.ones(3))
    b.load_state_dict({k: (v.copy() if hasattr(v, "copy") else v) for k, v in a.state_dict().items()})
    w2[:] = w1
    g = rng.standard_normal(3)
    a.step(w1, g)
    b.step(w2, g)
    assert np.array_equal(w1, w2) and b.t == 2


@pytest.mark.parametrize("bad", [dict(lr=0), dict(lr=-1), dict(lr=float("nan")), dict(betas=(1.0, 0.9))])
def test_bad_hyperparameters_are_refused(bad):
    with pytest.raises(ValueError):
        Adam(**bad)


def test_chunked_update_covers_every_element(numpy_path):
    from minivae.speed import chunks
    n = 3 * chunks.CHUNK + 17  # several chunks and a ragged end
    seen = np.zeros(n, dtype=int)
    sizes, scratches = [], set()

    def visit(s, scratch):
        sizes.append(s.stop - s.start)
        assert scratch.shape == (s.stop - s.start,)
        scratches.add(scratch.__array_interface__["data"][0])
        np.add.at(seen, np.arange(n)[s], 1)

    chunks.for_each_chunk(n, visit)
    assert np.array_equal(seen, np.ones(n, dtype=int))
    assert max(sizes) <= chunks.CHUNK  # so each chunk's passes stay in cache
    assert len(scratches) == 1  # one scratch chunk, reused for every chunk

    rng = np.random.default_rng(0)
    w = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    w_ref = w.astype(np.float64)
    Adam(lr=0.01).step(w, g)
    m, v = 0.1 * g, 0.001 * g.astype(np.float64) ** 2
    w_ref -= 0.01 * (m / 0.1) / (np.sqrt(v / 0.001) + 1e-8)
    assert np.allclose(w, w_ref, rtol=1e-5, atol=1e-6)


def test_adam_flushes_subnormal_state_to_zero(path):
    w = np.ones(4, dtype=np.float32)
    opt = Adam()
    opt.step(w, np.ones(4, dtype=np.float32))
    zero = np.zeros(4, dtype=np.float32)
    for _ in range(2000):  # a dead unit: exactly-zero gradients from now on
        opt.step(w, zero)
    tiny = np.finfo(np.float32).tiny
    for name in ("m", "v"):
        a = opt.state[name]
        assert not np.any((a != 0) & (np.abs(a) < tiny)), name  # nothing left in the subnormal range
    assert np.all(opt.state["m"] == 0)  # 0.9^2000 underflowed and was flushed, not stuck at 1e-45


@pytest.mark.parametrize("betas", [(5, 0.999), (0.9, 1.0), (0.9,), ("a", 0.9), (float("nan"), 0.9)])
def test_adam_refuses_betas_outside_the_unit_interval(betas):
    with pytest.raises(ValueError, match="betas must be two numbers in"):
        Adam(betas=betas)


def test_hyperparameters_are_plain_numbers():
    opt = Adam(lr=np.float32(0.01), betas=(np.float64(0.8), 0.9), eps=np.float32(1e-7))
    assert all(type(v) is float for v in (opt.lr, opt.b1, opt.b2, opt.eps))
    assert Adam(**opt.hyperparameters()).hyperparameters() == opt.hyperparameters()


@pytest.mark.skipif(not fused.AVAILABLE, reason="the fast extra (numba) is not installed: pip install 'minivae[fast]'")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [Adam, lambda: SGD(lr=0.01, momentum=0.9), lambda: SGD(lr=0.01, momentum=0)],
                         ids=["adam", "sgd-momentum", "sgd"])
def test_the_compiled_update_equals_the_numpy_one_to_the_last_bit(monkeypatch, dtype, make):
    finals = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("MINIVAE_FAST", flag)
        rng = np.random.default_rng(9)
        w, opt = rng.standard_normal(100_003).astype(dtype), make()
        for step in range(40):  # tiny gradients late on drive Adam's moments towards subnormals: the flush runs
            dw = (rng.standard_normal(w.size) * (1e-30 if step >= 20 else 1.0)).astype(dtype)
            dw[:500] = 0  # units that never fire
            opt.step(w, dw)
        finals[flag] = (w, opt.t, opt.state)
    (w0, t0, s0), (w1, t1, s1) = finals["0"], finals["1"]
    assert np.array_equal(w0, w1) and t0 == t1 and s0.keys() == s1.keys()
    for name in s0:
        assert np.array_equal(s0[name], s1[name]), name


@pytest.mark.parametrize("make", [Adam, lambda: SGD(lr=0.01, momentum=0.9), lambda: SGD(lr=0.01, momentum=0)],
                         ids=["adam", "sgd-momentum", "sgd"])
def test_a_step_saves_what_it_changes(path, make, rng):
    w, opt, saved = rng.standard_normal(1000), make(), UndoRecord()
    opt.step(w, rng.standard_normal(1000))
    before = (w.copy(), {k: v.copy() for k, v in opt.state.items()})
    opt.step(w, rng.standard_normal(1000), saved=saved)
    assert saved.complete and np.array_equal(saved.arrays["w"], before[0]) and not np.array_equal(w, before[0])
    for name, value in before[1].items():
        assert np.array_equal(saved.arrays[name], value), name


@pytest.fixture(params=["strict", "cupy"])
def device(request, monkeypatch):
    """A GPU array module: the strict stand-in (which runs the kernels' C on the host), then real CuPy if present."""
    if request.param == "strict":
        import strict_cupy
        monkeypatch.setitem(sys.modules, "cupy", strict_cupy.module)
        return strict_cupy.module
    return request.getfixturevalue("real_cupy")


UPDATES = pytest.mark.parametrize("make", [Adam, lambda: SGD(lr=0.01, momentum=0.9), lambda: SGD(lr=0.01, momentum=0)],
                                  ids=["adam", "sgd-momentum", "sgd"])


@UPDATES
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_gpu_kernel_equals_the_numpy_update_to_the_last_bit(device, monkeypatch, dtype, make):
    finals = {}
    for where, flag in [("host", "0"), ("device", "0"), ("device", "1")]:  # NumPy; NumPy-style on the GPU; kernel
        monkeypatch.setenv("MINIVAE_FAST", flag)
        rng = np.random.default_rng(9)
        w, opt = rng.standard_normal(10_007).astype(dtype), make()
        if where == "device":
            w = device.asarray(w)
        for step in range(40):  # tiny gradients late on drive Adam's moments towards subnormals: the flush runs
            dw = (rng.standard_normal(w.size) * (1e-30 if step >= 20 else 1.0)).astype(dtype)
            dw[:500] = 0  # units that never fire
            opt.step(w, device.asarray(dw) if where == "device" else dw)
        finals[where, flag] = (to_numpy(w), opt.t, {k: to_numpy(v) for k, v in opt.state.items()})
    (w0, t0, s0) = finals["host", "0"]
    for key in [("device", "0"), ("device", "1")]:
        w1, t1, s1 = finals[key]
        assert np.array_equal(w0, w1) and t0 == t1 and s0.keys() == s1.keys(), key
        for name in s0:
            assert np.array_equal(s0[name], s1[name]), (key, name)


@UPDATES
def test_a_gpu_step_is_one_kernel_and_saves_what_it_changes(strict, monkeypatch, make, rng):
    monkeypatch.setenv("MINIVAE_FAST", "1")  # the kernel, even where the NumPy path is forced for the suite
    w, opt, saved = strict.asarray(rng.standard_normal(1000)), make(), UndoRecord()
    opt.step(w, strict.asarray(rng.standard_normal(1000)), saved=saved)  # allocates the state and the record
    before = (to_numpy(w), {k: to_numpy(v) for k, v in opt.state.items()})
    dw = strict.asarray(rng.standard_normal(1000))
    strict.counts.reset()
    opt.step(w, dw, saved=saved)
    assert strict.counts.launches == 1 and strict.counts.transfers == 0  # the update, its undo copy, nothing else
    assert saved.complete and np.array_equal(to_numpy(saved.arrays["w"]), before[0])
    assert not np.array_equal(to_numpy(w), before[0])
    for name, value in before[1].items():
        assert np.array_equal(to_numpy(saved.arrays[name]), value), name


def test_the_stand_in_refuses_a_kernel_it_cannot_run(strict):
    with pytest.raises(NotImplementedError, match="outside the subset"):
        strict.ElementwiseKernel("T x", "T y", "for (int i = 0; i < 2; i++) y += x;", "loop")


def test_each_cupy_module_gets_its_own_kernel(strict, monkeypatch):
    # the suite runs the stand-in and real CuPy in one process: a kernel one built must not reach the other
    from minivae.speed import gpu_kernels
    build = lambda: gpu_kernels.kernel("sgd", gpu_kernels.SGD_INPUTS, ("w",), gpu_kernels.SGD_PLAIN, save=False)
    assert isinstance(build(), strict.ElementwiseKernel)
    other = type(sys)("other_cupy")
    other.ElementwiseKernel = lambda *args, **options: "built by the other module"
    monkeypatch.setitem(sys.modules, "cupy", other)
    assert build() == "built by the other module"


@pytest.mark.parametrize("value, on", [("0", False), ("false", False), ("No", False), ("off", False), (" 0", False),
                                       ("00", False), ("1", True), ("true", True), ("yes", True), ("ON", True)])
def test_minivae_fast_reads_the_usual_spellings(monkeypatch, value, on):
    monkeypatch.setenv("MINIVAE_FAST", value)
    assert fused.requested() is on


def test_a_minivae_fast_it_cannot_read_is_an_error(monkeypatch):
    monkeypatch.setenv("MINIVAE_FAST", "fast")
    with pytest.raises(ValueError, match="MINIVAE_FAST must be 0 .* or 1 .*; got 'fast'"):
        fused.requested()


@pytest.mark.skipif(not fused.AVAILABLE, reason="numba is not installed (the fast extra)")
def test_a_damaged_compiled_cache_is_rebuilt_not_an_error(tmp_path):
    import subprocess
    import textwrap
    script = textwrap.dedent("""
        import numpy as np
        from minivae.optim import Adam
        w = np.ones(10, np.float32)
        Adam(lr=0.1).step(w, np.ones(10, np.float32))
        print(w[0])
    """)
    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path), "MINIVAE_FAST": "1"}
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    files = sorted(tmp_path.rglob("fused._adam*.nb[ic]"))
    assert first.returncode == 0 and files, first.stderr
    for f in files:  # a write cut short
        f.write_bytes(f.read_bytes()[:20])
    again = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout and "was damaged" in again.stderr and "deleted" in again.stderr
