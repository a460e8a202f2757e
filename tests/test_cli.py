"""The command line, end to end in a temporary folder."""

import subprocess
import sys

import pytest

from minivae import VAE
from minivae.cli import main

FIGURES = ("loss.png", "reconstructions.png", "samples.png", "latent.png", "manifold.png", "kl_per_dim.png")


def test_train_writes_every_file(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "3", "--out", str(out), "--no-progress", "--hidden", "32"]) == 0
    for name in ("model.npz", "history.csv", *FIGURES):
        assert (out / name).stat().st_size > 0, name
    assert "final test ELBO" in capsys.readouterr().out
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 3
    model = VAE.load(out / "model.npz")
    assert model.latent_dim == 2 and model.hidden_dims == (32,)

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
    assert "batch_size must be" in capsys.readouterr().err


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
