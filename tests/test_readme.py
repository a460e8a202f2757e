"""The README's Python tour and every ``python -m minivae`` command in it run as written, in a temporary folder."""

import importlib.util
import os
import re
import shlex
from pathlib import Path

import pytest

import minivae
from minivae import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def commands():
    """Each line of a bash block that runs ``python -m minivae``, with its environment assignments."""
    found = []
    for block in blocks("bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            env = {}
            while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):
                key, value = words.pop(0).split("=", 1)
                env[key] = value
            if words[:3] == ["python", "-m", "minivae"]:
                found.append((line, env, words[3:]))
    return found


def test_the_readme_has_its_tour_and_its_commands():
    assert len(blocks("python")) == 1 and len(commands()) >= 8


@pytest.mark.slow
def test_the_python_tour_runs(tmp_path, monkeypatch):
    """As written, but with at most 2 epochs per fit and K = 20, as the commands below: the same code, quickly."""
    monkeypatch.chdir(tmp_path)
    real_fit, real_log_likelihood = minivae.VAE.fit, minivae.VAE.log_likelihood
    monkeypatch.setattr(minivae.VAE, "fit", lambda self, x, epochs=10, **kw: real_fit(self, x, min(epochs, 2), **kw))
    monkeypatch.setattr(minivae.VAE, "log_likelihood",
                        lambda self, x, n_samples=1000, y=None: real_log_likelihood(self, x, min(n_samples, 20), y))
    exec(compile(blocks("python")[0], "README.md", "exec"), {})
    assert (tmp_path / "model.npz").stat().st_size > 0


@pytest.mark.slow
def test_every_command_runs_as_written_in_order(tmp_path, monkeypatch, capsys):
    """In order, since later commands read what earlier ones wrote; 2 epochs and K = 20, as the README says."""
    monkeypatch.chdir(tmp_path)
    for defaults in cli.DATASET_DEFAULTS.values():
        monkeypatch.setitem(defaults, "epochs", 2)
        monkeypatch.setitem(defaults, "iw_samples", 20)
    for line, env, argv in commands():
        if "--backend" in argv and argv[argv.index("--backend") + 1] == "cupy" and importlib.util.find_spec("cupy") is None:
            continue  # the GPU section's commands need CuPy
        if "--samples" in argv:  # evaluate's K, as the training defaults above
            argv = [*argv[:argv.index("--samples") + 1], "20", *argv[argv.index("--samples") + 2:]]
        with monkeypatch.context() as m:
            for key, value in env.items():
                m.setenv(key, value)
            code = cli.main(argv)
        assert code == 0, (line, capsys.readouterr())
        capsys.readouterr()
    for path in ("runs/digits/model.npz", "runs/digits-iwae5/samples.png", "runs/digits-conditional/class_grid.png",
                 "threes.png", "digits.mvbb", "digits.npy"):
        assert (tmp_path / path).stat().st_size > 0, path
    assert not (tmp_path / "runs/digits/class_grid.png").exists()  # the runs kept apart
