"""Command line: ``python -m minivae train | sample | evaluate | compress | decompress`` (also installed as ``minivae``)."""

import argparse
import csv
import io
import math
import os
import signal
import sys
import tempfile
import time
from typing import Any
from pathlib import Path

import numpy as np

from .backend import to_numpy
from .datasets import binarize, load_digits, load_mnist
from .baselines import bits, gzip_bits, histogram_log_prob, pixel_histograms
from .families import build
from .evaluate import (bits_per_dimension, latent_diagnostics, monte_carlo_mean, monte_carlo_replicates,
                       paired_difference, replicate_mean)
from .likelihoods import NAMES as LIKELIHOODS
from .model import VAE
from .stops import signals_held
from .tempfiles import remove_abandoned
from .training import DivergedError
from .validation import check_positive

# Defaults per data set: the digits train in seconds; MNIST uses the classic 784-400-20 shape. The
# digits are counts of lit pixels, 0 to 16 in each 4x4 block, so their likelihood is a pmf over 17 levels:
# the beta-binomial, whose spread is free where the binomial's is tied to its mean (a binomial model of
# these digits loses to per-pixel histograms; this one beats them). MNIST's grey levels are binarised for its
# Bernoulli pixels (see binarize_mode). Importance sampling for log p(x) is quick on the digits' 300 test
# images, slow on MNIST's 10,000.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": dict(epochs=100, batch_size=64, hidden=(256,), likelihood="beta_binomial", trials=16, levels=17,
                   iw_samples=1000),
    "mnist": dict(epochs=10, batch_size=128, hidden=(400,), likelihood="bernoulli", trials=255, levels=256,
                  iw_samples=0),
    "fashion": dict(epochs=10, batch_size=128, hidden=(400,), likelihood="bernoulli", trials=255, levels=256,
                    iw_samples=0),
}
LATENT_DIM = 2  # the default: a latent space that can be drawn
FIGURES = ("loss.png", "reconstructions.png", "samples.png", "manifold.png", "class_grid.png", "latent.png",
           "kl_per_dim.png")


def hidden_sizes(text):
    """``"400"`` or ``"400,200"`` -> (400, 200); ``""`` or ``"none"`` -> () (a linear model)."""
    if text.strip().lower() in ("", "none"):
        return ()
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden takes comma-separated integers like 400,200; got {text!r}") from None
    if any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"hidden sizes must be positive; got {text!r}")
    return sizes


def decoder_std(text):
    """``--decoder-std``: ``learned``, or a number."""
    if text == "learned":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--decoder-std takes a number or 'learned'; got {text!r}") from None


def load_data(name, data_dir=None, download=False):
    """``(x_train, y_train, x_test, y_test)`` for ``digits`` (bundled), ``mnist`` or ``fashion``."""
    if name == "digits":
        return (*load_digits("train"), *load_digits("test"))
    kind = "digits" if name == "mnist" else "fashion"
    return (*load_mnist(data_dir, kind, "train", download), *load_mnist(data_dir, kind, "test", download))


def fixed_draw(x):
    """One fixed binarised draw of grey images, ``x_ij ~ Bernoulli(x_ij)`` (seed 0): the same command, the same images."""
    return binarize(x, "sample", rng=0)


def binarize_mode(flag, likelihood, x):
    """``train``'s binarisation: ``--binarize`` as given, else dynamic for a Bernoulli model of grey data.

    A Bernoulli is a pmf of binary pixels; of grey levels it is a cross-entropy,
    not a log-probability. Dynamic binarisation (a fresh draw ``x ~ Bernoulli(x)``
    at every use) makes the model one of binary images, as in the literature on
    binarised MNIST. ``--binarize none`` trains on the grey levels as they are.
    """
    if flag is not None:
        return None if flag == "none" else flag
    binary = bool(((x == 0) | (x == 1)).all())
    return "dynamic" if likelihood == "bernoulli" and not binary else None


def write_history(history, path):
    """One row per epoch; list-valued entries (KL per dimension) become one column each."""
    rows = []
    for row in history:
        flat = {}
        for key, value in row.items():
            if isinstance(value, list):
                flat.update({f"{key}_{i}": v for i, v in enumerate(value)})
            else:
                flat[key] = value
        rows.append(flat)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["epoch"])
        writer.writeheader()
        writer.writerows(rows)


def save_figure(fig, path, default_name="figure.png"):
    """Write ``fig`` to ``path``: into it as ``default_name`` if it is a folder, with ``.png`` added if it has no suffix."""
    path = Path(path)
    if path.is_dir():
        path = path / default_name
    elif not path.suffix:
        path = path.with_suffix(".png")
    fig.savefig(path, dpi=100)
    print(f"wrote {path}")
    return path


def run_folder(args):
    """``runs/`` and a name for what is trained: the data set, then each choice that differs from the default.

    ``train`` alone writes ``runs/digits``; ``train --iwae 5`` writes
    ``runs/digits-iwae5``, ``train --conditional --latent-dim 8`` writes
    ``runs/digits-conditional-latent8``, so runs never overwrite each other's files.
    """
    defaults = DATASET_DEFAULTS[args.dataset]
    parts = [args.dataset]
    if args.conditional:
        parts.append("conditional")
    if args.iwae is not None:
        parts.append(f"iwae{args.iwae}")
    if args.flow:
        parts.append(f"flow{args.flow}")
    if args.prior:
        parts.append(f"{PRIORS[args.prior].replace('_', '-')}{args.components}")
    if args.top_dim:
        parts.append(f"top{args.top_dim}")
    if args.likelihood and args.likelihood != defaults["likelihood"]:
        parts.append(args.likelihood.replace("_", "-"))
    if args.binarize:
        parts.append(f"binarize-{args.binarize}")
    for flag, value, default in (("latent", args.latent_dim, LATENT_DIM), ("beta", args.beta, 1.0),
                                 ("free-bits", args.free_bits, 0.0), ("warmup", args.warmup_epochs, 0),
                                 ("seed", args.seed, 0)):
        if value != default:
            parts.append(f"{flag}{value:g}")
    return Path("runs") / "-".join(parts)


MODEL_OPTIONS = {  # train's options that shape a new model, and their defaults (None: per data set)
    "hidden": None, "latent_dim": LATENT_DIM, "activation": "relu", "likelihood": None, "trials": None,
    "levels": None, "decoder_std": 1.0, "beta": 1.0, "conditional": False, "seed": 0, "flow": 0,
    "prior": None, "components": None, "top_dim": None}
PRIORS = {"mixture": "mixture_prior", "vamp": "vampprior"}  # train --prior's choices and their families
COMPONENTS = 10  # --components' default


def check_resume_options(args):
    """With ``--resume``, refuse options that would shape a new model; without it, fill in their defaults."""
    given = [name for name, default in MODEL_OPTIONS.items()
             if getattr(args, name) is not None and getattr(args, name) is not False]
    if args.resume and given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise ValueError(f"--resume continues the checkpoint's model as it was saved, so {flags} cannot apply; "
                         "leave them out, or train a new model without --resume")
    for name, default in MODEL_OPTIONS.items():
        if getattr(args, name) is None and default is not None:
            setattr(args, name, default)


def resume_command(args, out, epochs, batch_size, lr):
    """The command that continues this run exactly: the same data, batch size, learning rate and objective."""
    parts = ["python -m minivae train", f"--resume {out / 'model.npz'}", f"--out {out}", f"--epochs {epochs}"]
    if args.dataset != "digits":
        parts.append(f"--dataset {args.dataset}")
    if args.data_dir:
        parts.append(f"--data-dir {args.data_dir}")
    parts += [f"--batch-size {batch_size}", f"--lr {lr:g}"]
    for flag, value in (("--binarize", args.binarize), ("--iwae", args.iwae), ("--warmup-epochs", args.warmup_epochs),
                        ("--free-bits", args.free_bits)):
        if value:
            parts.append(f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}")
    return " ".join(parts)


def check_output_folder(out):
    """Make the folder ``out``, or say clearly why it cannot be one."""
    if out.is_symlink() and not out.exists():
        raise ValueError(f"--out {out} is a link to {os.readlink(out)}, which does not exist; make that folder "
                         "or choose another --out")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; train writes a folder of files: choose a folder")
    out.mkdir(parents=True, exist_ok=True)
    remove_abandoned(out)  # what saves killed outright (kill -9) left behind in it


def check_train_numbers(args):
    """Each number ``train`` takes, checked under its flag's name before anything is loaded or trained."""
    for flag, value, integer, zero in (("--epochs", args.epochs, True, True), ("--batch-size", args.batch_size, True, False),
                                       ("--lr", args.lr, False, False), ("--latent-dim", args.latent_dim, True, False),
                                       ("--trials", args.trials, True, False), ("--levels", args.levels, True, False),
                                       ("--iw-samples", args.iw_samples, True, True), ("--beta", args.beta, False, True),
                                       ("--warmup-epochs", args.warmup_epochs, True, True),
                                       ("--free-bits", args.free_bits, False, True), ("--iwae", args.iwae, True, False),
                                       ("--seed", args.seed, True, True), ("--flow", args.flow, True, True),
                                       ("--components", args.components, True, False),
                                       ("--top-dim", args.top_dim, True, False)):
        if value is not None:
            check_positive(flag, value, integer=integer, allow_zero=zero)
    if isinstance(args.decoder_std, float):
        check_positive("--decoder-std", args.decoder_std)


def check_family_options(args):
    """``--flow``, ``--prior``, ``--components`` and ``--top-dim`` checked together; ``--components`` given its
    default."""
    if args.components is not None and not args.prior:
        raise ValueError("--components is the number of a learned prior's components: give --prior mixture or "
                         "--prior vamp with it")
    chosen = [flag for flag, value in (("--flow", args.flow), ("--prior", args.prior), ("--top-dim", args.top_dim))
              if value]
    if len(chosen) > 1:
        raise ValueError(f"{' and '.join(chosen)} make different families (a flow posterior, a learned prior, a "
                         "second latent layer), and minivae has no model with more than one: choose one")
    if args.prior and args.components is None:
        args.components = COMPONENTS


def model_family(args, hidden=()):
    """The ``family`` part of a new model's configuration from ``--flow``, ``--prior``, ``--components`` and
    ``--top-dim`` (whose two networks take half of each of the ``hidden`` sizes)."""
    if args.flow:
        return {"family": "planar_flow", "flow_length": args.flow}
    if args.prior:
        return {"family": PRIORS[args.prior], "n_components": args.components}
    if args.top_dim:
        return {"family": "hierarchical", "top_dim": args.top_dim, "top_hidden_dims": [max(1, h // 2) for h in hidden]}
    return {}


def cmd_train(args):
    from . import plotting  # matplotlib loads only for the commands that draw
    defaults = DATASET_DEFAULTS[args.dataset]
    check_train_numbers(args)
    check_resume_options(args)
    check_family_options(args)
    epochs = args.epochs if args.epochs is not None else defaults["epochs"]
    if args.out:
        out = Path(args.out)
    else:
        out = Path(args.resume).parent if args.resume else run_folder(args)
    check_output_folder(out)
    x, y, x_test, y_test = load_data(args.dataset, args.data_dir, args.download)

    if args.resume:
        model = VAE.load(args.resume, backend=args.backend)
        print(f"resumed {args.resume} after {len(model.history_)} epochs")
        # the checkpoint's own settings unless given: the place in an unfinished epoch, the optimiser's rate
        place, opt = model.partial_epoch_, model.optimizer_
        batch_size = args.batch_size if args.batch_size is not None else \
            place["batch_size"] if place else defaults["batch_size"]
        lr = args.lr if args.lr is not None else opt.lr if opt is not None else 1e-3
    else:
        batch_size = args.batch_size if args.batch_size is not None else defaults["batch_size"]
        lr = 1e-3 if args.lr is None else args.lr
        likelihood = args.likelihood or defaults["likelihood"]
        trials = (defaults["trials"] if args.trials is None else args.trials) \
            if likelihood in ("binomial", "beta_binomial") else None
        levels = (defaults["levels"] if args.levels is None else args.levels) if likelihood == "categorical" else None
        hidden = args.hidden if args.hidden is not None else defaults["hidden"]
        family = model_family(args, hidden)
        model = build(family, input_dim=x.shape[1], hidden_dims=hidden,
                      latent_dim=args.latent_dim, activation=args.activation, likelihood=likelihood,
                      decoder_std=args.decoder_std, beta=args.beta, backend=args.backend, seed=args.seed,
                      trials=trials, levels=levels, n_classes=int(y.max()) + 1 if args.conditional else None)
    print(model)
    print(f"training into {out}/")
    binarized = binarize_mode(args.binarize, model.likelihood, x)
    if binarized and args.binarize is None:
        print("binarising: a Bernoulli is a pmf of binary pixels, so every epoch trains on a fresh draw "
              "x ~ Bernoulli(grey level), and the test figures are of one fixed draw of the test images "
              "(--binarize none trains on the grey levels, where the loss is a cross-entropy, not a log-probability)")
    x_eval = fixed_draw(x_test) if binarized else x_test  # what the test figures are log-probabilities of
    conditional = model.n_classes is not None  # a resumed checkpoint says for itself
    labels = {"y": y} if conditional else {}
    start, done = time.perf_counter(), len(model.history_)
    with signals_held():  # a signal after training has stopped waits for the checkpoint to be written
        try:
            model.fit(x, epochs=epochs, batch_size=batch_size, lr=lr,
                      validation=(x_eval, y_test) if conditional else x_eval, **labels,
                      progress=not args.no_progress, binarize=binarized, warmup_epochs=args.warmup_epochs,
                      free_bits=args.free_bits, objective="elbo" if args.iwae is None else "iwae",
                      n_samples=1 if args.iwae is None else args.iwae)
        except DivergedError as err:
            save_checkpoint(model, out)
            print(f"error: {err}. The last good model is saved in {out / 'model.npz'}; continue it with --resume "
                  "and a smaller --lr", file=sys.stderr)
            return 2
        seconds = time.perf_counter() - start
        trained = len(model.history_) - done
        if model.stopped_by_:
            save_checkpoint(model, out)
            print(f"training stopped by {model.stopped_by_} after {trained} of {epochs} epochs"
                  + (" and part of the next" if model.partial_epoch_ else "")
                  + f"; saved every completed step in {out / 'model.npz'}, which resumes exactly: "
                  + resume_command(args, out, epochs - trained, batch_size, lr), file=sys.stderr)
            return 128 + signal.Signals[model.stopped_by_].value
        save_checkpoint(model, out)
    drawn = {"class_grid.png"} if conditional else {"samples.png", "manifold.png"}
    drawn |= {"loss.png", "reconstructions.png", "latent.png", "kl_per_dim.png"}
    for name in set(FIGURES) - drawn:  # an earlier run's figure left beside these would pass for this run's
        if (out / name).exists():
            (out / name).unlink()
            print(f"removed {out / name}, an earlier run's figure that this run does not draw")
    if model.history_:
        save_figure(plotting.plot_history(model.history_), out / "loss.png")
    given = y_test if conditional else None
    save_figure(plotting.plot_reconstructions(model, x_test[:12], n=12, y=given), out / "reconstructions.png")
    if conditional:  # samples of each class; the 2-D manifold would need one label
        save_figure(plotting.plot_class_grid(model), out / "class_grid.png")
    else:
        save_figure(plotting.plot_samples(model, 64), out / "samples.png")
        save_figure(plotting.plot_manifold(model), out / "manifold.png")
    save_figure(plotting.plot_latent(model, x_eval, y_test), out / "latent.png")
    kl_dims, _, variances = latent_diagnostics(model, x_eval, y=given)
    save_figure(plotting.plot_kl_per_dim(kl_dims, variances), out / "kl_per_dim.png")
    print(f"trained {trained} epochs in {seconds:.1f} s; the model, its history and its figures are in {out}/")
    report_likelihood(model, x_eval, defaults["iw_samples"] if args.iw_samples is None else args.iw_samples, given,
                      x_train=fixed_draw(x) if binarized else x)
    return 0


def report_likelihood(model, x, iw_samples, y=None, x_train=None):
    """Print the test ELBO and (for ``iw_samples`` > 0) the importance-weighted log p(x), with standard errors.

    A conditional model's figures are of ``log p(x|y)``, given the labels ``y``. For a model whose
    likelihood is a pmf over pixel levels, given the training data ``x_train``, the test log p(x) is
    compared in bits per image with two coders that have no latent: per-pixel histograms and gzip.
    """
    def line(label, value, se):
        bpd = bits_per_dimension(value, model.input_dim)
        print(f"{label:<24} {value:9.3f} ± {se:.3f} nats per example   "
              f"({bpd:.4f} ± {se / (model.input_dim * math.log(2)):.4f} bits per dimension)")

    labels = None if y is None else np.asarray(y)  # each batch gets its own rows' labels
    line("test ELBO:", *monte_carlo_mean(model.elbo, x, replicates=10, y=labels))
    if iw_samples:
        given = "log p(x)" if labels is None else "log p(x|y)"
        sizes = []

        def estimate(xb, **yb):
            log_p, ess = model.log_likelihood(xb, n_samples=iw_samples, ess=True, **yb)
            sizes.append(to_numpy(ess))
            return log_p

        runs = monte_carlo_replicates(estimate, x, replicates=2, y=labels)  # (2, N)
        line(f"test {given}, K={iw_samples}:", *replicate_mean(runs))
        print("  (an importance-weighted estimate: its expectation is a lower bound on log p(x) that rises with K;")
        print(f"   median effective sample size {np.median(np.concatenate(sizes)):.1f} of {iw_samples}: near 1, "
              "the estimate rests on a few samples and its standard error understates its error)")
        if x_train is not None and model.likelihood_.levels is not None and labels is None:
            compare_with_baselines(model, runs, x, x_train)
    caveat = model.likelihood_.caveat(model.xp.asarray(x))
    if caveat:
        print(f"note: {caveat}")


def compare_with_baselines(model, runs, x, x_train):
    """Print the model's test log p(x) in bits per image beside per-pixel histograms and gzip, and whether it wins.

    ``runs`` is (R, N): replicates of the model's per-image importance-weighted log p(x) in nats.
    """
    lik = model.likelihood_
    counts, train_counts = lik.counts(np.asarray(x)), lik.counts(np.asarray(x_train))
    histograms = histogram_log_prob(pixel_histograms(train_counts, lik.levels), counts)  # (N,) nats
    model_bits, model_se = (bits(v) for v in replicate_mean(runs))
    gain, gain_se = (bits(v) for v in paired_difference(runs, histograms))
    print(f"bits per image of the {len(x)} test images (lower is better; each pixel one of {lik.levels} levels):")
    print(f"  this model, -log2 p(x)          {-model_bits:8.2f} ± {model_se:.2f}")
    print(f"  per-pixel histograms (no latent) {-bits(histograms.mean()):8.2f}")
    print(f"  gzip -9                          {gzip_bits(counts, lik.levels):8.2f}")
    verdict = "beats" if gain > 4 * gain_se else "does not beat" if gain < -4 * gain_se else "is level with"
    print(f"  the model {verdict} the histograms by {gain:+.2f} ± {gain_se:.2f} bits per image "
          "(paired over the test images; the error covers the images drawn and the Monte Carlo noise)")


def save_checkpoint(model, out):
    """Write the model and its history into the folder ``out``, and then say so.

    Both files are written before anything is printed: after a SIGHUP the
    terminal may be gone, and a failed print must not cost the history. A
    stop signal during the writes takes effect once both are complete. When
    ``out`` cannot take them (a full disk, a folder made read-only), they go
    to a new folder in the temporary directory instead, and the error says
    where, and how to move them.
    """
    with signals_held():
        try:
            model.save(out / "model.npz")
            write_history(model.history_, out / "history.csv")
        except OSError as err:
            rescue = Path(tempfile.mkdtemp(prefix="minivae-rescued-"))
            try:
                model.save(rescue / "model.npz")
                write_history(model.history_, rescue / "history.csv")
            except OSError as again:
                raise OSError(f"could not save the model in {out} ({err}) nor in {rescue} ({again}); free some space "
                              "and train again") from err
            raise OSError(f"could not save the model in {out} ({err}); it is safe in {rescue}/model.npz with its "
                          f"history: once there is room, move it with  mv {rescue}/* {out}/") from err
    print(f"wrote {out / 'model.npz'}\nwrote {out / 'history.csv'}")


def cmd_sample(args):
    from . import plotting
    if args.n is not None:
        check_positive("--n", args.n, integer=True)
    if args.seed is not None:
        check_positive("--seed", args.seed, integer=True, allow_zero=True)
    model = VAE.load(args.checkpoint, backend=args.backend)
    if args.n is None:
        args.n = 6 * model.n_classes if model.n_classes is not None and args.label is None else 64
    if args.seed is not None:
        model.eval_rng_ = np.random.default_rng(args.seed)
    if model.n_classes is None and args.label is not None:
        raise ValueError("--label is for a conditional model (trained with --conditional); this one is not")
    if model.n_classes is not None and args.label is None:  # every class, the same z down each column
        if args.n % model.n_classes:
            raise ValueError(f"without --label, a conditional model draws every one of its {model.n_classes} "
                             f"classes alike, so --n must be a multiple of {model.n_classes}; got {args.n} (or pass "
                             "--label to draw one class)")
        figure = plotting.plot_class_grid(model, n_styles=args.n // model.n_classes)
    elif model.n_classes is not None:
        images = model.sample(args.n, y=args.label)
        figure = plotting.plot_images(to_numpy(images), cols=math.ceil(math.sqrt(args.n)),
                                      title=f"samples of class {args.label}")
    else:
        figure = plotting.plot_samples(model, args.n)
    save_figure(figure, args.out, default_name="samples.png")
    return 0


def cmd_evaluate(args):
    model = VAE.load(args.checkpoint, backend=args.backend)
    _, _, x_test, y_test = load_data(args.dataset, args.data_dir, args.download)
    if args.limit is not None:
        x_test, y_test = (a[:check_positive("--limit", args.limit, integer=True)] for a in (x_test, y_test))
    if args.binarize:
        x_test = fixed_draw(x_test)
    print(model)
    print(f"test examples:           {len(x_test)}" + (" (one fixed binarised draw)" if args.binarize else ""))
    given = None if model.n_classes is None else y_test
    report_likelihood(model, x_test, check_positive("--samples", args.samples, integer=True), given)
    kl_dims, count, _ = latent_diagnostics(model, x_test, y=given)
    print(f"active units:            {count} of {model.latent_dim} (Var_x E[z|x] > 0.01)")
    print("KL per dimension (nats): " + " ".join(f"{v:.2f}" for v in kl_dims))
    return 0


def cmd_compress(args):
    from .ans import Message
    from .bitsback import BitsBackCodec, PixelCodec
    from .compressed import MAGIC, pack

    model = VAE.load(args.checkpoint, backend=args.backend)
    if model.n_classes is not None:
        raise ValueError("compress codes with an unconditional model; this one is conditional on labels")
    if args.out:
        check_writable_message(Path(args.out), Path(args.checkpoint), MAGIC)
    codec = BitsBackCodec(model)  # refuses a density: only a pmf over pixel levels codes them
    x, _, x_test, _ = load_data(args.dataset, args.data_dir, args.download)
    if args.limit is not None:
        x_test = x_test[:check_positive("--limit", args.limit, integer=True)]
    if args.binarize:  # one fixed draw, so that the same command codes the same images
        x, x_test = fixed_draw(x), fixed_draw(x_test)
    n = codec.trials
    counts, train_counts = (np.rint(a * n).astype(np.int64) for a in (x_test, x))
    if not np.allclose(counts, x_test * n, atol=1e-4):
        fix = ("add --binarize to code one binarised draw of the images" if model.likelihood == "bernoulli" else
               "train a model whose likelihood is a pmf over these levels")
        raise ValueError(f"the test data are not whole levels 0..{n} (x = k / {n}), so this {model.likelihood} model "
                         f"cannot code them losslessly; {fix}")
    start = time.perf_counter()
    message = codec.encode(counts)
    data = message.to_bytes()
    same = np.array_equal(codec.decode(Message.from_bytes(data), len(counts)), counts)
    seconds = time.perf_counter() - start
    N, initial = len(counts), 64 + 32 * codec.initial_words()
    print(f"{N} test images, {model.input_dim} pixels of {n + 1} levels each; coded and decoded in {seconds:.1f} s")
    print(f"every image decoded bit for bit: {'yes' if same else 'NO'}")

    # where the code length comes from: the continuous bound, the bound of the bucketed latent, the rounding
    elbo_runs = monte_carlo_replicates(model.elbo, x_test, replicates=10)  # (10, N) nats
    bound_runs, floored = codec.discrete_bound(counts, replicates=10)  # (10, N) bits
    lengths = codec.code_lengths_  # (N,) bits, one draw of z each
    elbo, elbo_se = replicate_mean(elbo_runs)
    neg_elbo, neg_elbo_se = -bits(elbo), bits(elbo_se)
    bound, bound_se = replicate_mean(bound_runs)
    length_se = lengths.std(ddof=1) / math.sqrt(N)
    print("bits per image (lower is better), each ± its standard error:")
    print(f"  negative ELBO, continuous z                  {neg_elbo:9.2f} ± {neg_elbo_se:.2f}")
    print(f"  negative ELBO, z on the coder's buckets      {bound:9.2f} ± {bound_se:.2f}   (the bound bits-back codes at)")
    print(f"  bits-back code length, mean                  {lengths.mean():9.2f} ± {length_se:.2f}   "
          "(one z per image, frequencies rounded to integers)")
    print(f"  bits-back message growth                     {(message.bits() - initial) / N:9.2f}")
    rounding = paired_difference(lengths, bound_runs.mean(axis=0))
    bucketing = paired_difference(bound_runs, -bits(elbo_runs.mean(axis=0)))
    print(f"  code length - bucketed bound: {rounding[0]:+.2f} ± {rounding[1]:.2f}   the integer frequencies: each level "
          f"gets at least 2^-{codec.pixel_precision}, so the {floored:.2%} of pixels the model thinks rarer than that "
          f"cost at most {codec.pixel_precision} bits each (negative: the model's tails are too thin)")
    print(f"  bucketed - continuous bound:  {bucketing[0]:+.2f} ± {bucketing[1]:.2f}   the buckets make another model "
          "of x, with its own bound; it may lie below the continuous one")

    pixel_codec = PixelCodec(train_counts, n)
    histograms = histogram_log_prob(pixel_codec.probs, counts)  # (N,) nats
    pixel = pixel_codec.encode(counts)
    zipped = gzip_bits(counts, n + 1)
    print(f"  per-pixel histograms, ANS                    {(pixel.bits() - 64) / N:9.2f}   "
          f"(their information content {-bits(histograms.mean()):.2f})")
    print(f"  gzip -9                                      {zipped:9.2f}")
    print(f"  raw                                          {model.input_dim * math.log2(n + 1):9.2f}")
    for name, gain, se in (("per-pixel histograms", *paired_difference(-bits(histograms), lengths)),
                           ("gzip -9", zipped - lengths.mean(), length_se)):
        verdict = "beats" if gain > 4 * se else "loses to" if gain < -4 * se else "is level with"
        print(f"bits-back coding {verdict} {name} by {gain:+.2f} ± {se:.2f} bits per image")
    print(f"fixed overheads, once per message: {initial - 64} initial bits and the 64-bit head")
    if args.out:
        payload = pack(codec, counts, message)
        write_atomically(Path(args.out), payload)
        print(f"wrote {args.out} ({len(payload)} bytes; python -m minivae decompress --checkpoint {args.checkpoint} "
              f"--message {args.out} --out images.npy restores the images)")
    return 0 if same else 1


def check_writable_message(out, checkpoint, magic):
    """Refuse to write a message over the checkpoint, or over any file that is not an earlier message."""
    if out.exists() and (out.resolve() == checkpoint.resolve() or out.is_dir()
                         or not out.read_bytes()[:len(magic)] == magic):
        raise ValueError(f"{out} exists and is not a compressed message (it may be the checkpoint or your data); "
                         "choose another --out")


def write_atomically(path, data):
    """Write the bytes ``data`` to ``path`` through a temporary file beside it, so a stop never leaves half a file."""
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)


def cmd_decompress(args):
    from .compressed import unpack

    model = VAE.load(args.checkpoint, backend=args.backend)
    path = Path(args.message)
    if not path.is_file():
        raise FileNotFoundError(f"no message at {path}")
    counts = unpack(path.read_bytes(), model)
    out = Path(args.out)
    if out.exists() and out.resolve() in (path.resolve(), Path(args.checkpoint).resolve()):
        raise ValueError(f"--out {out} would overwrite the message or the checkpoint; choose another")
    levels = model.likelihood_.levels
    if levels is None:  # unpack has checked the message against the model: a density codes nothing
        raise ValueError(f"the model in {args.checkpoint} is a density, not a probability over pixel levels")
    array = counts.astype(np.uint8 if levels <= 256 else np.uint16)
    npy = io.BytesIO()
    np.save(npy, array, allow_pickle=False)
    write_atomically(out, npy.getvalue())
    print(f"decoded {len(counts)} images of {counts.shape[1]} pixels, levels 0..{levels - 1}; their checksum "
          f"matches the one stored when they were compressed; wrote {out} ({array.dtype}, shape {array.shape})")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="minivae", description="Train and use a variational autoencoder.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train on a data set and write the model, its history and figures",
                           description="Train a VAE and write DIR/model.npz, DIR/history.csv and figures.")
    train.add_argument("--dataset", choices=tuple(DATASET_DEFAULTS), default="digits",
                       help="digits: the bundled 8x8 digits (offline); mnist, fashion: IDX files (default: digits)")
    train.add_argument("--data-dir", help="folder with the MNIST/Fashion-MNIST IDX files (default: ~/.cache/minivae/...)")
    train.add_argument("--download", action="store_true", help="fetch missing MNIST/Fashion-MNIST files (checked by SHA-256)")
    train.add_argument("--epochs", type=int, help="epochs to train (default: 200 for digits, 10 otherwise)")
    train.add_argument("--batch-size", type=int, help="minibatch size (default: 64 for digits, 128 otherwise; with "
                       "--resume, that of the unfinished epoch)")
    train.add_argument("--lr", type=float, help="Adam learning rate (default: 1e-3, or with --resume the checkpoint's)")
    train.add_argument("--latent-dim", type=int,
                       help="latent dimensions (default: 2, which can be plotted)")
    train.add_argument("--hidden", type=hidden_sizes, help="hidden sizes, e.g. 400 or 400,200 (default: 256 for digits, 400 otherwise)")
    train.add_argument("--activation", choices=("relu", "tanh"), help="(default: relu)")
    train.add_argument("--likelihood", choices=LIKELIHOODS,
                       help="p(x|z) (default: beta_binomial for digits, bernoulli otherwise)")
    train.add_argument("--trials", type=int,
                       help="binomial, beta_binomial: trials per pixel (default: 16 for digits, 255 for 8-bit images)")
    train.add_argument("--levels", type=int,
                       help="categorical: values per pixel (default: 17 for digits, 256 for 8-bit images)")
    train.add_argument("--iw-samples", type=int,
                       help="importance samples K for the test log p(x), 0 for none (default: 1000 for digits, "
                            "0 otherwise)")
    train.add_argument("--decoder-std", type=decoder_std,
                       help="Gaussian likelihood: a fixed std, or 'learned' (default: 1.0)")
    train.add_argument("--beta", type=float, help="weight of the KL term (default: 1.0)")
    train.add_argument("--warmup-epochs", type=int, default=0, help="KL warm-up: epochs for the KL weight to reach beta")
    train.add_argument("--free-bits", type=float, default=0.0, help="per-dimension KL floor in nats (default: 0)")
    train.add_argument("--conditional", action="store_true",
                       help="a conditional VAE of p(x|label): the label enters the encoder and the decoder")
    train.add_argument("--iwae", type=int, metavar="K",
                       help="train on the K-sample importance-weighted bound (Burda et al. 2016) instead of the ELBO")
    train.add_argument("--flow", type=int, metavar="K",
                       help="a posterior of K planar maps after the encoder's Gaussian (Rezende & Mohamed 2015; "
                            "minivae.FlowVAE), trained on the ELBO (default: 0, none)")
    train.add_argument("--prior", choices=tuple(PRIORS),
                       help="a learned prior instead of N(0, I): a mixture of Gaussians (minivae.MixturePriorVAE) or "
                            "the VampPrior (Tomczak & Welling 2018; minivae.VampPriorVAE), trained on the ELBO")
    train.add_argument("--components", type=int, metavar="C",
                       help=f"the learned prior's number of components (default: {COMPONENTS})")
    train.add_argument("--top-dim", type=int, metavar="L2",
                       help="a second stochastic layer of L2 units above the first (Burda et al. 2016; "
                            "minivae.HierarchicalVAE), its two networks half the hidden sizes; trains on the ELBO, "
                            "or with --iwae on the importance-weighted bound")
    train.add_argument("--binarize", choices=("dynamic", "none"),
                       help="dynamic: redraw binary pixels ~ Bernoulli(x) at every use (the default for a Bernoulli "
                            "model of grey images); none: train on the values as they are")
    train.add_argument("--backend", choices=("numpy", "cupy", "auto"), help="array backend (default: $MINIVAE_BACKEND or numpy)")
    train.add_argument("--seed", type=int, help="seeds the model's weights and its training noise (default: 0)")
    train.add_argument("--out", help="output folder (default: runs/ and a name for the run, e.g. runs/digits, "
                                     "runs/digits-iwae5; with --resume, the checkpoint's folder)")
    train.add_argument("--resume", metavar="CHECKPOINT", help="continue training a saved model for --epochs more epochs")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=cmd_train)

    sample = sub.add_parser("sample", help="draw samples from a saved model into a PNG",
                            description="Decode draws from the prior of a saved model into an image grid.")
    sample.add_argument("--checkpoint", required=True, help="a model.npz written by train")
    sample.add_argument("--n", type=int, help="number of samples (default: 64; a conditional model without "
                                              "--label: 6 of each class)")
    sample.add_argument("--out", default="samples.png",
                        help="image to write; a folder gets samples.png, a name without a suffix gets .png "
                             "(default: samples.png)")
    sample.add_argument("--seed", type=int, help="reseed the sampling generator (default: continue the saved one)")
    sample.add_argument("--label", type=int,
                        help="a conditional model's class to draw (default: a grid of every class)")
    sample.add_argument("--backend", choices=("numpy", "cupy", "auto"))
    sample.set_defaults(run=cmd_sample)

    evaluate = sub.add_parser("evaluate", help="print the test ELBO, log-likelihood, active units and KL per dimension",
                              description="Evaluate a saved model on a data set's test split.")
    evaluate.add_argument("--checkpoint", required=True, help="a model.npz written by train")
    evaluate.add_argument("--samples", type=int, default=1000, help="importance samples K for log p(x) (default: 1000)")
    evaluate.add_argument("--dataset", choices=tuple(DATASET_DEFAULTS), default="digits")
    evaluate.add_argument("--data-dir")
    evaluate.add_argument("--download", action="store_true")
    evaluate.add_argument("--limit", type=int, help="evaluate only the first N test examples")
    evaluate.add_argument("--binarize", action="store_true",
                          help="a Bernoulli model: score one fixed binarised draw of the grey images (x ~ Bernoulli(x))")
    evaluate.add_argument("--backend", choices=("numpy", "cupy", "auto"))
    evaluate.set_defaults(run=cmd_evaluate)

    compress = sub.add_parser("compress", help="code the test split losslessly by bits-back coding, and decode it back",
                              description="Compress a data set's test split with a saved binomial or Bernoulli model "
                                          "(bits-back coding over ANS) and compare with gzip and a per-pixel coder.")
    compress.add_argument("--checkpoint", required=True, help="a model.npz written by train")
    compress.add_argument("--dataset", choices=tuple(DATASET_DEFAULTS), default="digits")
    compress.add_argument("--data-dir")
    compress.add_argument("--download", action="store_true")
    compress.add_argument("--limit", type=int, help="code only the first N test examples")
    compress.add_argument("--out", help="write the compressed file here (a header and the message; "
                                          "decompress restores the images)")
    compress.add_argument("--binarize", action="store_true",
                          help="a Bernoulli model: code one fixed binarised draw of the grey images (x ~ Bernoulli(x))")
    compress.add_argument("--backend", choices=("numpy", "cupy", "auto"))
    compress.set_defaults(run=cmd_compress)

    decompress = sub.add_parser("decompress", help="restore the images from a file that compress wrote",
                                description="Decode a compressed file with the checkpoint that wrote it, check the "
                                            "images against the checksum in its header, and save them as .npy.")
    decompress.add_argument("--checkpoint", required=True, help="the model.npz that compressed the file")
    decompress.add_argument("--message", required=True, help="the file compress --out wrote")
    decompress.add_argument("--out", default="images.npy", help="where to save the images (default: images.npy)")
    decompress.add_argument("--backend", choices=("numpy", "cupy", "auto"))
    decompress.set_defaults(run=cmd_decompress)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; try a smaller model, batch size or --limit", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C outside training, whose own stop saves the model first
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
