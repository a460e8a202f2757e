"""Generated bad values through the public API and the command line: each is a clear error, and changes nothing.

Hypothesis draws values no caller should pass (wrong types, NaN and inf, negative and enormous numbers, text,
arrays of the wrong shape) for one argument at a time. A call may accept a value that happens to be valid; when
it refuses one, the refusal must be a ``ValueError`` or ``TypeError`` with a message, and the model must be
exactly as it was: parameters, optimiser, generators, history and place in an unfinished epoch.
"""

import collections
import math
import os

import numpy as np
import pytest

import hypothesis  # noqa: F401  (the test extra installs it)
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from minivae import VAE, DivergedError, datasets, latent, plotting  # noqa: E402
from minivae.ans import Message  # noqa: E402
from minivae.bitsback import BitsBackCodec  # noqa: E402
from minivae.cli import main  # noqa: E402

# MINIVAE_BAD_INPUT_EXAMPLES=2000 for a longer attack; -s then prints the tally of outcomes
EXAMPLES = int(os.environ.get("MINIVAE_BAD_INPUT_EXAMPLES", "60"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
TALLY = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def tally():
    yield
    print(f"\nbad-input calls: {sum(TALLY.values())}; " + ", ".join(f"{k} {v}" for k, v in sorted(TALLY.items())))

numbers = st.one_of(st.integers(-10**30, -1), st.integers(10**12, 10**400), st.just(0),
                    st.sampled_from([math.nan, math.inf, -math.inf, -0.5, 1e308, 1e-320, 2.5]))
anything = st.one_of(numbers, st.none(), st.booleans(), st.text(max_size=5), st.lists(st.integers(), max_size=3),
                     st.dictionaries(st.text(max_size=2), st.integers(), max_size=2), st.just(b"\x00"),
                     st.builds(lambda n: np.full((n, 3), np.nan), st.integers(0, 2)),
                     st.builds(lambda n: np.ones((n, 64, 2)), st.integers(0, 2)),
                     st.just(np.array([["0.5"] * 64])), st.just(np.ma.array(np.ones((2, 64)), mask=True)),
                     st.just(np.full((2, 64), 255.0)), st.just(np.zeros((2, 64), dtype=complex)))


def trained():
    model = VAE(64, hidden_dims=(8,), latent_dim=2, likelihood="binomial", trials=16, seed=0)
    x = np.round(np.random.default_rng(0).random((40, 64)) * 16) / 16
    return model.fit(x, epochs=1, batch_size=16, progress=False), x


MODEL, X = trained()


def state(model):
    opt = model.optimizer_
    return (model.flat_params.copy(), None if opt is None else (opt.t, opt.lr, {k: v.copy() for k, v in opt.state.items()}),
            model.rng_.bit_generator.state, model.eval_rng_.bit_generator.state, list(model.history_),
            model.partial_epoch_)


def same(a, b):
    return (np.array_equal(a[0], b[0]) and _same_opt(a[1], b[1]) and a[2:5] == b[2:5]
            and (a[5] is None) == (b[5] is None))


def _same_opt(a, b):
    if a is None or b is None:
        return a is b
    return a[:2] == b[:2] and a[2].keys() == b[2].keys() and all(np.array_equal(a[2][k], b[2][k]) for k in a[2])


def refused_clearly_or_accepted(call, model=None):
    """Run ``call``; a refusal must be a ValueError or TypeError with a message, and leave ``model`` as it was."""
    before = None if model is None else state(model)
    try:
        call()
    except (ValueError, TypeError) as err:
        clear = bool(str(err)) and (model is None or same(state(model), before))
        TALLY["refused clearly, state intact" if clear else "refused, but unclear or state changed"] += 1
        assert str(err), f"{type(err).__name__} with no message"
        if model is not None:
            assert same(state(model), before), f"refused ({err}) but the model changed"
        return "refused"
    except DivergedError as err:  # a value that trains, badly: the steps before are kept, the failing one undone
        TALLY["trained, then diverged clearly"] += 1
        assert "undone" in str(err)
        return "diverged"
    except Exception as err:
        TALLY[f"other exception: {type(err).__name__}"] += 1
        raise
    TALLY["accepted (a valid value)"] += 1
    return "accepted"


def copy_of_model():
    model = VAE(64, hidden_dims=(8,), latent_dim=2, likelihood="binomial", trials=16, seed=0)
    model.flat_params[...] = MODEL.flat_params
    return model


FIT_OPTIONS = ("epochs", "batch_size", "lr", "optimizer", "validation", "binarize", "warmup_epochs", "free_bits",
               "eval_batch_size", "objective", "n_samples", "y", "x")


@SETTINGS
@given(option=st.sampled_from(FIT_OPTIONS), value=anything)
def test_fit_refuses_a_bad_option_and_changes_nothing(option, value):
    model = copy_of_model()
    model.fit(X, epochs=1, batch_size=16, progress=False)  # an optimiser and a history to keep intact
    options = {"epochs": 1, "batch_size": 16, "progress": False, option: value}
    x = options.pop("x", X)
    if option in ("epochs",) and isinstance(value, int) and 0 <= value <= 3:
        return  # a valid number of epochs trains, as it should
    refused_clearly_or_accepted(lambda: model.fit(x, **options), model)


METHODS = {
    "elbo": lambda m, v: m.elbo(v), "encode": lambda m, v: m.encode(v), "decode": lambda m, v: m.decode(v),
    "reconstruct": lambda m, v: m.reconstruct(v), "sample": lambda m, v: m.sample(v),
    "log_likelihood-n": lambda m, v: m.log_likelihood(X[:2], n_samples=v),
    "log_likelihood-x": lambda m, v: m.log_likelihood(v, n_samples=2),
    "elbo-eps": lambda m, v: m.elbo(X[:2], eps=v), "elbo-y": lambda m, v: m.elbo(X[:2], y=v),
    "interpolate": lambda m, v: latent.interpolate(m, X[0], X[1], steps=v),
    "interpolate-x": lambda m, v: latent.interpolate(m, v, X[1]),
}


@SETTINGS
@given(method=st.sampled_from(sorted(METHODS)), value=anything)
def test_model_methods_refuse_bad_values_and_change_nothing(method, value):
    model = copy_of_model()
    if method == "sample" and isinstance(value, int) and 0 < value < 100:
        return
    refused_clearly_or_accepted(lambda: METHODS[method](model, value), model)


CONSTRUCTOR = ("input_dim", "hidden_dims", "latent_dim", "activation", "likelihood", "decoder_std", "beta", "dtype",
               "backend", "seed", "trials", "n_classes", "levels")


@SETTINGS
@given(option=st.sampled_from(CONSTRUCTOR), value=anything)
def test_the_constructor_refuses_bad_settings_clearly(option, value):
    options = {"input_dim": 64, "hidden_dims": (8,), "latent_dim": 2, "likelihood": "binomial", "trials": 16,
               option: value}
    if option in ("input_dim", "hidden_dims", "n_classes", "levels", "trials") and isinstance(value, int) \
            and 0 < value < 1000:
        return  # a valid size builds a model, which may be large
    refused_clearly_or_accepted(lambda: VAE(**options))


PLOTS = {
    "images": lambda v: plotting.plot_images(v), "images-cols": lambda v: plotting.plot_images(X[:4], cols=v),
    "images-shape": lambda v: plotting.plot_images(X[:4], shape=v),
    "samples": lambda v: plotting.plot_samples(copy_of_model(), n=v),
    "reconstructions": lambda v: plotting.plot_reconstructions(copy_of_model(), X[:4], n=v),
    "manifold": lambda v: plotting.plot_manifold(copy_of_model(), n=v),
    "manifold-dims": lambda v: plotting.plot_manifold(copy_of_model(), n=3, dims=v),
    "latent-labels": lambda v: plotting.plot_latent(copy_of_model(), X[:4], v),
    "kl": lambda v: plotting.plot_kl_per_dim(v), "history": lambda v: plotting.plot_history(v),
    "binarize": lambda v: datasets.binarize(v), "binarize-threshold": lambda v: datasets.binarize(X, threshold=v),
    "codec": lambda v: BitsBackCodec(v), "codec-precision": lambda v: BitsBackCodec(MODEL, latent_precision=v),
    "push-freq": lambda v: Message().push(0, v, 16), "push-precision": lambda v: Message().push(0, 1, v),
}


@SETTINGS
@given(name=st.sampled_from(sorted(PLOTS)), value=anything)
def test_plots_binarisation_and_coding_refuse_bad_values_clearly(name, value):
    if name in ("samples", "reconstructions", "manifold", "images-cols") and isinstance(value, int) and 0 < value < 50:
        return
    if name == "latent-labels" and isinstance(value, list) and len(value) == 4:
        return
    refused_clearly_or_accepted(lambda: PLOTS[name](value))


CLI_FLAGS = {
    "sample": ("--n", "--seed", "--label"), "evaluate": ("--samples", "--limit"),
    "train": ("--epochs", "--batch-size", "--lr", "--latent-dim", "--trials", "--levels", "--beta", "--free-bits",
              "--warmup-epochs", "--iwae", "--iw-samples", "--seed", "--hidden", "--decoder-std"),
}
bad_text = st.one_of(st.sampled_from(["-1", "0", "nan", "inf", "-inf", "1e400", "abc", "", " ", "2.5", "-0",
                                      "99999999999999999999999", "1,-2", "none,3"]))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "model.npz"
    MODEL.save(path)
    return path


@SETTINGS
@given(command=st.sampled_from(sorted(CLI_FLAGS)), data=st.data())
def test_the_command_line_refuses_bad_numbers_in_one_line(command, data, checkpoint, tmp_path_factory, capsys):
    flag = data.draw(st.sampled_from(CLI_FLAGS[command]))
    value = data.draw(bad_text)
    out = tmp_path_factory.mktemp("out")
    args = {"sample": ["--checkpoint", str(checkpoint), "--out", str(out / "s.png")],
            "evaluate": ["--checkpoint", str(checkpoint), "--samples", "2"],
            "train": ["--out", str(out), "--no-progress", "--epochs", "0", "--iw-samples", "0", "--hidden", "4"]}[command]
    if command == "train" and flag in ("--epochs", "--hidden", "--iw-samples") or \
            (command == "evaluate" and flag == "--samples"):
        args = [a for a in args if a != flag]  # the generated value replaces the fixed one
        args = [a for i, a in enumerate(args) if i == 0 or args[i - 1] != flag]
    try:
        code = main([command, *args, f"{flag}={value}"])
    except SystemExit as exit:  # argparse: a usage error, printed in one line
        code = exit.code
    except Exception:
        TALLY["CLI: traceback"] += 1
        raise
    err = capsys.readouterr().err
    TALLY[f"CLI: exit {code}"] += 1
    assert code in (0, 1, 2) and "Traceback" not in err, err
    if code == 2:  # one line saying what is wrong (after argparse's usage lines, for a usage error)
        assert "error:" in err.strip().splitlines()[-1], err
    if command == "train" and code == 2:
        assert not (out / "model.npz").exists()
