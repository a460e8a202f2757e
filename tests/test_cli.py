"""The command line, end to end in a temporary folder."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import minivae
from minivae import VAE
from minivae import cli
from minivae.cli import main

FIGURES = ("loss.png", "reconstructions.png", "samples.png", "latent.png", "manifold.png", "kl_per_dim.png")


@pytest.fixture(autouse=True)
def fewer_importance_samples(monkeypatch):
    """``train``'s test log p(x) with K = 20 rather than 1000: the same code, a fiftieth of the time."""
    monkeypatch.setitem(cli.DATASET_DEFAULTS["digits"], "iw_samples", 20)


def test_train_writes_every_file(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "3", "--out", str(out), "--no-progress", "--hidden", "32"]) == 0
    for name in ("model.npz", "history.csv", *FIGURES):
        assert (out / name).stat().st_size > 0, name
    text = capsys.readouterr().out
    assert re.search(r"test ELBO: +-\d+\.\d+ ± \d\.\d+ nats per example +\(\d\.\d+ ± \d\.\d+ bits per dimension\)", text)
    assert re.search(r"test log p\(x\), K=20: +-\d+\.\d+ ± \d\.\d+ nats", text) and "note:" not in text
    ess = float(re.search(r"median effective sample size (\d+\.\d) of 20", text).group(1))
    assert 1 <= ess <= 20
    assert cli.DATASET_DEFAULTS["digits"]["iw_samples"] == 20  # the fixture's; the main job's own is 1000
    for baseline in (r"per-pixel histograms \(no latent\) +154\.91", r"gzip -9 +203\.81",  # the test digits' own figures
                     r"the model (beats|does not beat|is level with) the histograms by [-+]\d+\.\d+ ± \d+\.\d+ bits"):
        assert re.search(baseline, text), baseline
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 3
    model = VAE.load(out / "model.npz")
    assert model.latent_dim == 2 and model.hidden_dims == (32,)
    assert (model.likelihood, model.trials) == ("beta_binomial", 16)  # the digits are counts of 16

    # resume for two more epochs, then sample from the result
    assert main(["train", "--epochs", "2", "--out", str(out), "--no-progress", "--resume", str(out / "model.npz")]) == 0
    assert len(VAE.load(out / "model.npz").history_) == 5
    assert main(["sample", "--checkpoint", str(out / "model.npz"), "--n", "9", "--out", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["sample", "--checkpoint", str(tmp_path / "nope.npz")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "--download" in capsys.readouterr().err


def test_a_zero_batch_size_is_an_error_not_the_default(tmp_path, capsys):
    assert main(["train", "--epochs", "1", "--batch-size", "0", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "--batch-size must be" in capsys.readouterr().err


def test_bad_hidden_sizes_are_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--hidden", "abc"])
    assert exit_info.value.code == 2
    assert "comma-separated integers" in capsys.readouterr().err


@pytest.mark.parametrize("args", [[], ["train"], ["sample"]])
def test_help(args):
    out = subprocess.run([sys.executable, "-m", "minivae", *args, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: minivae" in out.stdout


def test_evaluate_prints_every_figure(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--epochs", "2", "--out", str(out), "--no-progress", "--hidden", "16", "--latent-dim", "3"])
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "model.npz"), "--samples", "20", "--limit", "30"]) == 0
    text = capsys.readouterr().out
    for needle in ("test ELBO:", "K=20", "importance-weighted", "active units:", "of 3", "KL per dimension"):
        assert needle in text, needle


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_a_bad_limit_is_an_error_not_all_or_most_examples(tmp_path, capsys, limit):
    out = tmp_path / "run"
    main(["train", "--epochs", "1", "--out", str(out), "--no-progress", "--hidden", "16"])
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(out / "model.npz"), "--samples", "5", "--limit", limit]) == 2
    assert "--limit must be" in capsys.readouterr().err


def test_sigterm_saves_a_checkpoint_that_resumes_and_exits_non_zero(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "minivae", "train", "--epochs", "100000", "--out", str(out),
                             "--no-progress", "--hidden", "16"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        assert proc.stdout.readline().startswith("VAE(")  # printed just before training starts
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "training stopped by SIGTERM" in err and "--resume" in err and "Traceback" not in err
    model = VAE.load(out / "model.npz")
    assert model.optimizer_.t > 0 and not (out / "loss.png").exists()  # stopped, not reported as complete
    epochs_done = len(model.history_)
    assert main(["train", "--resume", str(out / "model.npz"), "--out", str(out), "--epochs", "1", "--no-progress"]) == 0
    assert len(VAE.load(out / "model.npz").history_) == epochs_done + 1


def test_a_one_dimensional_latent_space_gets_every_figure(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "2", "--out", str(out), "--no-progress", "--hidden", "16",
                 "--latent-dim", "1"]) == 0
    for name in FIGURES:
        assert (out / name).stat().st_size > 0, name


@pytest.mark.parametrize("args, message", [
    (["--likelihood", "gaussian", "--decoder-std", "1e200"], "decoder_std must be 'learned' or a number"),
    (["--hidden", "100000000000"], "needs .* GiB to train"),
])
def test_impossible_models_are_one_line_errors(tmp_path, capsys, args, message):
    assert main(["train", "--epochs", "1", "--out", str(tmp_path), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and len(err.strip().splitlines()) == 1


def test_a_damaged_checkpoint_or_data_file_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--epochs", "1", "--out", str(out), "--no-progress", "--hidden", "8"])
    with np.load(out / "model.npz") as f:
        arrays = {k: f[k] for k in f.files}
    arrays["history"] = np.array(json.dumps([{"epoch": 1, "loss": None}]))
    np.savez(out / "damaged.npz", **arrays)
    capsys.readouterr()
    assert main(["train", "--resume", str(out / "damaged.npz"), "--out", str(out), "--no-progress"]) == 2
    assert "history row 1's loss should be a finite number" in capsys.readouterr().err

    data = tmp_path / "data"
    data.mkdir()
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        (data / (stem + ".gz")).write_bytes(b"\x1f\x8b\x08\x00" + bytes(40))
    assert main(["train", "--dataset", "mnist", "--data-dir", str(data), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "damaged gzip stream" in err and len(err.strip().splitlines()) == 1


def test_sample_writes_where_it_says(tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--epochs", "1", "--out", str(out), "--no-progress", "--hidden", "8"])
    capsys.readouterr()
    folder = tmp_path / "figures"
    folder.mkdir()
    assert main(["sample", "--checkpoint", str(out / "model.npz"), "--n", "4", "--out", str(folder)]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {folder / 'samples.png'}"
    assert (folder / "samples.png").stat().st_size > 0
    assert main(["sample", "--checkpoint", str(out / "model.npz"), "--n", "4", "--out", str(tmp_path / "grid")]) == 0
    assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'grid.png'}"
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_a_divergence_is_one_line_and_the_last_good_model_is_saved(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "3", "--out", str(out), "--no-progress", "--hidden", "8", "--lr", "1e39"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "that step is undone" in err and "--resume" in err
    model = VAE.load(out / "model.npz")
    assert np.all(np.isfinite(model.flat_params))


def test_a_bernoulli_model_of_grey_levels_is_called_a_cross_entropy(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="cross-entropy"):
        assert main(["train", "--epochs", "1", "--out", str(out), "--no-progress", "--hidden", "8",
                     "--likelihood", "bernoulli", "--iw-samples", "0", "--binarize", "none"]) == 0
    text = capsys.readouterr().out
    assert "test log p(x)" not in text and "note: the Bernoulli likelihood is a distribution over binary" in text


def test_trials_must_be_positive(tmp_path, capsys):
    assert main(["train", "--epochs", "1", "--out", str(tmp_path), "--no-progress", "--trials", "0"]) == 2
    assert "trials must be a finite integer > 0" in capsys.readouterr().err


def test_train_on_the_importance_weighted_bound(tmp_path, capsys):
    out = tmp_path / "iwae"
    args = ["train", "--epochs", "2", "--out", str(out), "--no-progress", "--hidden", "16"]
    assert main(args + ["--iwae", "4"]) == 0
    assert len(VAE.load(out / "model.npz").history_) == 2 and "test log p(x)" in capsys.readouterr().out
    for bad, message in ((["--iwae", "0"], "--iwae must be"), (["--iwae", "3", "--warmup-epochs", "2"], "warm-up"),
                         (["--iwae", "3", "--beta", "2"], "beta=1")):
        assert main(args + bad) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_train_a_flow_posterior_and_use_its_checkpoint(tmp_path, capsys):
    from minivae.flows import FlowVAE
    out = tmp_path / "flow"
    args = ["train", "--epochs", "2", "--out", str(out), "--no-progress", "--hidden", "16", "--iw-samples", "20"]
    assert main(args + ["--flow", "3"]) == 0
    model = VAE.load(out / "model.npz")
    assert type(model) is FlowVAE and model.flow_length == 3 and len(model.history_) == 2
    assert "test log p(x)" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(out / "model.npz"), "--samples", "20", "--limit", "50"]) == 0
    assert "log p(x)" in capsys.readouterr().out
    for bad, message in ((["--flow", "-1"], "--flow must be"), (["--flow", "2", "--iwae", "3"], "ELBO alone")):
        assert main(args + bad) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_train_two_stochastic_layers_on_the_importance_weighted_bound(tmp_path, capsys, monkeypatch):
    from minivae.hierarchical import HierarchicalVAE
    args = ["train", "--epochs", "2", "--no-progress", "--hidden", "16", "--iw-samples", "20"]
    monkeypatch.chdir(tmp_path)
    assert main(args + ["--top-dim", "2", "--iwae", "3"]) == 0
    checkpoint = tmp_path / "runs" / "digits-iwae3-top2" / "model.npz"
    model = VAE.load(checkpoint)
    assert type(model) is HierarchicalVAE and model.top_dim == 2 and model.top_hidden_dims == (8,)
    assert len(model.history_) == 2 and "test log p(x)" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "s.png")]) == 0
    for bad, message in ((["--top-dim", "0"], "--top-dim must be"), (["--top-dim", "2", "--flow", "2"], "choose one"),
                         (["--top-dim", "2", "--conditional"], "unconditional"),
                         (["--top-dim", "2", "--free-bits", "0.5"], "free bits")):
        assert main(args + bad) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_train_a_learned_prior_and_use_its_checkpoint(tmp_path, capsys, monkeypatch):
    from minivae.cli import build_parser, check_family_options, check_resume_options, model_family, run_folder
    from minivae.priors import VampPriorVAE
    args = ["train", "--epochs", "2", "--no-progress", "--hidden", "16", "--iw-samples", "20"]
    monkeypatch.chdir(tmp_path)
    assert main(args + ["--prior", "vamp", "--components", "4"]) == 0
    checkpoint = tmp_path / "runs" / "digits-vampprior4" / "model.npz"
    model = VAE.load(checkpoint)
    assert type(model) is VampPriorVAE and model.n_components == 4
    assert "test log p(x)" in capsys.readouterr().out
    assert main(["sample", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "s.png")]) == 0
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--samples", "20", "--limit", "50"]) == 0
    assert "log p(x)" in capsys.readouterr().out
    mixture = build_parser().parse_args(["train", "--prior", "mixture"])  # the other prior, without training it
    check_resume_options(mixture)
    check_family_options(mixture)
    assert model_family(mixture) == {"family": "mixture_prior", "n_components": 10}
    assert str(run_folder(mixture)).endswith("digits-mixture-prior10")
    for bad, message in ((["--components", "3"], "give --prior"), (["--prior", "vamp", "--flow", "2"], "choose one"),
                         (["--prior", "vamp", "--components", "0"], "--components must be"),
                         (["--prior", "mixture", "--conditional"], "unconditional"),
                         (["--prior", "mixture", "--iwae", "3"], "ELBO alone")):
        assert main(args + bad) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err


def test_a_conditional_model_draws_the_class_it_is_asked_for(tmp_path, capsys):
    out = tmp_path / "cvae"
    assert main(["train", "--conditional", "--epochs", "2", "--out", str(out), "--no-progress", "--hidden", "16"]) == 0
    assert (out / "class_grid.png").stat().st_size > 0 and not (out / "samples.png").exists()
    assert "test log p(x|y), K=20" in capsys.readouterr().out
    checkpoint = str(out / "model.npz")
    assert VAE.load(checkpoint).n_classes == 10
    for extra in (["--label", "3"], []):
        assert main(["sample", "--checkpoint", checkpoint, "--out", str(tmp_path / "s.png"), *extra]) == 0
    assert main(["sample", "--checkpoint", checkpoint, "--label", "12", "--out", str(tmp_path / "t.png")]) == 2
    assert "0..9" in capsys.readouterr().err
    assert main(["evaluate", "--checkpoint", checkpoint, "--samples", "10", "--limit", "20"]) == 0
    assert "log p(x|y)" in capsys.readouterr().out


def test_compress_codes_the_test_split_and_gets_it_back(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "3", "--out", str(out), "--no-progress", "--hidden", "16", "--latent-dim", "3"]) == 0
    capsys.readouterr()
    message = tmp_path / "test.ans"
    assert main(["compress", "--checkpoint", str(out / "model.npz"), "--limit", "40", "--out", str(message)]) == 0
    text = capsys.readouterr().out
    assert "every image decoded bit for bit: yes" in text and message.stat().st_size > 0
    for label in ("bits-back message growth", "negative ELBO, continuous z", "negative ELBO, z on the coder's buckets",
                  "code length - bucketed bound", "bucketed - continuous bound", "per-pixel histograms", "gzip -9",
                  "initial bits"):
        assert label in text
    assert re.search(r"bits-back coding (beats|loses to|is level with) per-pixel histograms by [-+]\d+\.\d+ ± ", text)

    # decompress restores them, checked against the test split itself
    images = tmp_path / "images.npy"
    assert main(["decompress", "--checkpoint", str(out / "model.npz"), "--message", str(message),
                 "--out", str(images)]) == 0
    x_test = minivae.load_digits("test")[0][:40]
    assert np.array_equal(np.load(images), np.rint(x_test * 16))
    # compress never writes over the checkpoint or other files
    model_bytes = (out / "model.npz").read_bytes()
    assert main(["compress", "--checkpoint", str(out / "model.npz"), "--limit", "2", "--out", str(out / "model.npz")]) == 2
    assert "not a compressed message" in capsys.readouterr().err and (out / "model.npz").read_bytes() == model_bytes
    assert main(["train", "--conditional", "--epochs", "1", "--out", str(tmp_path / "c"), "--no-progress",
                 "--hidden", "8"]) == 0
    assert main(["compress", "--checkpoint", str(tmp_path / "c" / "model.npz")]) == 2
    assert "unconditional" in capsys.readouterr().err


def test_a_resume_keeps_the_checkpoints_settings_and_refuses_new_model_options(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), "--no-progress", "--hidden", "8", "--lr", "0.005"]) == 0
    assert main(["train", "--epochs", "1", "--resume", str(out / "model.npz"), "--no-progress"]) == 0
    assert VAE.load(out / "model.npz").optimizer_.lr == 0.005  # not the default 1e-3
    assert main(["train", "--epochs", "1", "--resume", str(out / "model.npz"), "--no-progress", "--lr", "0.002"]) == 0
    assert VAE.load(out / "model.npz").optimizer_.lr == 0.002
    capsys.readouterr()
    for extra in (["--conditional"], ["--latent-dim", "2"], ["--hidden", "8"], ["--seed", "3"]):
        assert main(["train", "--epochs", "1", "--resume", str(out / "model.npz"), "--no-progress", *extra]) == 2
        err = capsys.readouterr().err
        assert f"so {extra[0]} cannot apply" in err, err
    assert len(VAE.load(out / "model.npz").history_) == 3  # the refused commands trained nothing


def test_an_out_that_cannot_be_a_folder_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")
    (tmp_path / "file").write_text("mine")
    for out, message in (("dangling", "which does not exist"), ("file", "is a file")):
        assert main(["train", "--epochs", "1", "--out", str(tmp_path / out), "--no-progress"]) == 2
        assert message in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "mine"


@pytest.mark.parametrize("args, message", [
    (["sample", "--n", "-3"], "--n must be a finite integer > 0; got -3"),
    (["sample", "--seed", "-1"], "--seed must be a finite integer >= 0; got -1"),
    (["train", "--iw-samples", "-1"], "--iw-samples must be"),
    (["train", "--epochs", "2000000"], "would not end in a lifetime"),
])
def test_bad_numbers_name_their_option_before_anything_runs(tmp_path, capsys, args, message):
    if args[0] == "sample":
        args = [*args, "--checkpoint", str(tmp_path / "none.npz")]  # refused before the checkpoint is read
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "model.npz").exists()


def test_a_conditional_model_draws_a_whole_grid_or_one_class(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--out", str(out), "--no-progress", "--hidden", "8", "--conditional",
                 "--iw-samples", "0"]) == 0
    checkpoint = ["--checkpoint", str(out / "model.npz")]
    capsys.readouterr()
    assert main(["sample", *checkpoint, "--n", "3", "--out", str(tmp_path / "a.png")]) == 2
    assert "--n must be a multiple of 10; got 3" in capsys.readouterr().err and not (tmp_path / "a.png").exists()
    assert main(["sample", *checkpoint, "--out", str(tmp_path / "b.png")]) == 0  # 6 of each class
    assert main(["sample", *checkpoint, "--n", "3", "--label", "2", "--out", str(tmp_path / "c.png")]) == 0


def test_ctrl_c_outside_training_is_one_line_not_a_traceback(tmp_path, capsys, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(VAE, "load", interrupted)  # as if Ctrl-C came while compress was reading or coding
    assert main(["compress", "--checkpoint", str(tmp_path / "m.npz")]) == 128 + signal.SIGINT
    assert capsys.readouterr().err.strip() == "interrupted"


def test_a_bernoulli_model_of_grey_images_trains_on_binarised_draws(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    grey = [rng.random((n, 16)).astype(np.float32) for n in (64, 32)]  # stands in for MNIST's grey levels
    monkeypatch.setattr(cli, "load_data", lambda *args: (grey[0], np.zeros(64, int), grey[1], np.zeros(32, int)))
    seen = {}
    real_fit = VAE.fit

    def fit(self, x, *args, **options):
        seen.update(options)
        return real_fit(self, x, *args, **options)

    monkeypatch.setattr(VAE, "fit", fit)
    assert main(["train", "--dataset", "mnist", "--epochs", "1", "--hidden", "8", "--out", str(tmp_path / "a"),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert seen["binarize"] == "dynamic" and "binarising: a Bernoulli is a pmf of binary pixels" in out
    assert set(np.unique(seen["validation"])) <= {0.0, 1.0}  # the test figures are of a binary draw
    assert "note:" not in out  # no caveat that the figures are not log-probabilities

    with pytest.warns(UserWarning, match="cross-entropy, not the log of a probability"):
        assert main(["train", "--dataset", "mnist", "--epochs", "1", "--hidden", "8", "--binarize", "none",
                     "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert seen["binarize"] is None and "binarising" not in out and "note:" in out  # the grey levels, said so
    assert main(["evaluate", "--checkpoint", str(tmp_path / "a" / "model.npz"), "--dataset", "mnist",
                 "--samples", "5", "--binarize"]) == 0
    out = capsys.readouterr().out
    assert "one fixed binarised draw" in out and "note:" not in out
