"""Shared fixtures: the backends every model test runs on; the order and number of parallel workers."""

import os
import sys

# The tests run in parallel workers, each beside notebook kernels: every core is busy, and BLAS threads that spin
# while they wait would fight each other for them. One thread for minivae's products, in the workers and in the
# kernels they start (which inherit this); tests of the thread choice set the variable themselves.
os.environ.setdefault("MINIVAE_BLAS_THREADS", "1")

# The optimisers' NumPy path, in the workers and in every kernel and command they start. With the fast extra
# installed, each such process would spend about a second loading numba's compiled update before its first step
# (a minute of the suite's CPU), and a learner's install (the README's ".[test]") has no numba: the notebooks run
# here as they run for a learner. tests/test_optim.py runs both paths whatever this says, and CI runs the
# training and checkpoint tests again with the compiled one (.ci/run).
os.environ.setdefault("MINIVAE_FAST", "0")

# Notebooks that train the same model (minivae.seeds.trained, same configuration, options, data and seed) share
# it through one folder for the whole run: the first to need it trains it, the others wait and load it. Made
# here, before the parallel workers start, so that they and their kernels inherit it; removed at the end.
if "MINIVAE_MODEL_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["MINIVAE_MODEL_CACHE"] = tempfile.mkdtemp(prefix="minivae-models-")
    atexit.register(shutil.rmtree, os.environ["MINIVAE_MODEL_CACHE"], ignore_errors=True)

# nbformat's import would compile the IRI grammars of an optional jsonschema checker in every worker (a second
# or more each); no notebook uses that format. The grader does the same for itself (minivae.grade).
sys.modules.setdefault("rfc3987_syntax", None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import strict_cupy  # noqa: E402


def _real_cupy_or_skip():
    try:
        import cupy
    except ImportError:
        pytest.skip("real CuPy is not installed (pip install cupy-cuda12x); its path is covered by the strict stand-in")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device")
    except Exception as err:
        pytest.skip(f"CuPy is installed but sees no GPU ({err})")
    return cupy


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker more than the cores, since several tests wait on kernels, subprocesses or time limits."""
    return (os.cpu_count() or 1) + 1


SLOW = ("test_notebook_runs[", "test_nbgrader_generates_the_assignment_and_autogrades_it",
        "test_every_command_runs_as_written_in_order")
# The longest of them, longest first, as measured on two cores; the other slow tests follow in their own order.
LONGEST = ("10_iwae", "08_posterior_collapse", "05_train_digits", "12_conditional", "15_semi_supervised",
           "14_learned_priors", "16_two_stochastic_layers", "test_every_command_runs_as_written_in_order",
           "13_planar_flows",
           "test_nbgrader_generates_the_assignment_and_autogrades_it", "06_latent_space", "07_likelihood",
           "00_autoencoder", "11_compression")


def pytest_collection_modifyitems(items):
    """Mark the long tests ``slow``, and queue them so that the parallel workers finish together.

    xdist's ``worksteal`` hands each of the W workers a contiguous share of the queue (then lets an idle
    worker take the tail of a busy one's), so the slow tests, longest first, are dealt round the shares, each
    share starting with its own; the quick tests fill the rest of each share in their order.
    """
    for item in items:
        if item.name.startswith(SLOW):
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(LONGEST)}
    slow = sorted((item for item in items if item.get_closest_marker("slow")),
                  key=lambda item: next((i for name, i in rank.items() if name in item.name), len(LONGEST)))
    quick = [item for item in items if not item.get_closest_marker("slow")]
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    queue, left = [], len(items)
    for w in range(workers):
        share = left // (workers - w)  # as worksteal sizes the shares
        own = slow[w::workers]
        queue += own + quick[:max(0, share - len(own))]
        quick = quick[max(0, share - len(own)):]
        left -= share
    items[:] = queue + quick


@pytest.fixture(params=["numpy", "strict", "cupy"])
def backend(request, monkeypatch):
    """Name of the backend to build models on; "strict" installs the stand-in as ``cupy``.

    Yields the name a model takes (``"numpy"`` or ``"cupy"``).
    """
    if request.param == "strict":
        monkeypatch.setitem(sys.modules, "cupy", strict_cupy.module)
        return "cupy"
    if request.param == "cupy":
        _real_cupy_or_skip()
        return "cupy"
    return "numpy"


@pytest.fixture
def strict(monkeypatch):
    """The strict stand-in, installed as ``cupy``."""
    monkeypatch.setitem(sys.modules, "cupy", strict_cupy.module)
    return strict_cupy.module


@pytest.fixture
def real_cupy():
    return _real_cupy_or_skip()


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
