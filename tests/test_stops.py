"""Stop signals around saves: a signal during a save takes effect once the file is complete, never before."""

import errno
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from minivae import VAE, cli
from minivae.cli import main
from minivae.stops import signals_held


@pytest.fixture
def usual_ctrl_c():
    """Ctrl-C raising KeyboardInterrupt, whatever handler this test process inherited (a runner may set its own)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def signal_during_savez(monkeypatch, *signums):
    """Make ``np.savez`` send ``signums`` to this process half way through writing the checkpoint."""
    real = np.savez

    def savez(f, **arrays):
        f.write(b"PK\x03\x04")  # the file is begun...
        for signum in signums:
            os.kill(os.getpid(), signum)
        f.seek(0)
        f.truncate()
        real(f, **arrays)  # ...and completed after the signals came
    monkeypatch.setattr(np, "savez", savez)


def test_ctrl_c_during_a_save_comes_after_it(tmp_path, monkeypatch, usual_ctrl_c):
    model = VAE(64, (8,), 2, seed=0)
    signal_during_savez(monkeypatch, signal.SIGINT, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        model.save(tmp_path / "m.npz")
    back = VAE.load(tmp_path / "m.npz")  # complete, and the only file
    assert np.array_equal(back.flat_params, model.flat_params) and os.listdir(tmp_path) == ["m.npz"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_two_sigterms_during_a_save_end_the_process_after_it(tmp_path):
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np
        from minivae import VAE
        real = np.savez
        def savez(f, **arrays):
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
            real(f, **arrays)
        np.savez = savez
        VAE(64, (8,), 2, seed=0).save({str(tmp_path / "m.npz")!r})
        print("not reached: SIGTERM ends the process once the save is complete")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGTERM and "not reached" not in done.stdout
    assert VAE.load(tmp_path / "m.npz").latent_dim == 2 and os.listdir(tmp_path) == ["m.npz"]


def test_a_held_signal_is_delivered_once_with_the_handler_from_before():
    seen = []
    previous = signal.signal(signal.SIGHUP, lambda signum, frame: seen.append(signum))
    try:
        with signals_held():
            os.kill(os.getpid(), signal.SIGHUP)
            os.kill(os.getpid(), signal.SIGHUP)
            assert seen == []
        assert seen == [signal.SIGHUP]
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_second_ctrl_c_while_a_stopped_run_saves_keeps_the_run(tmp_path, monkeypatch, capsys, usual_ctrl_c):
    monkeypatch.setitem(cli.DATASET_DEFAULTS["digits"], "iw_samples", 20)
    real_fit = VAE.fit

    def fit_then_ctrl_c(self, *args, **kwargs):  # the first Ctrl-C stops training after the first step
        real_step = self.forward_backward

        def step(*a, **k):
            os.kill(os.getpid(), signal.SIGINT)
            return real_step(*a, **k)
        self.forward_backward = step
        return real_fit(self, *args, **kwargs)
    monkeypatch.setattr(VAE, "fit", fit_then_ctrl_c)
    signal_during_savez(monkeypatch, signal.SIGINT)  # the second, while the checkpoint is written
    out = tmp_path / "run"
    assert main(["train", "--epochs", "5", "--out", str(out), "--no-progress", "--hidden", "8",
                 "--lr", "0.005", "--batch-size", "32"]) == 128 + signal.SIGINT
    err = capsys.readouterr().err
    assert "training stopped by SIGINT" in err and err.rstrip().endswith("interrupted")
    model = VAE.load(out / "model.npz")
    assert model.optimizer_.t == 1 and (out / "history.csv").exists()
    assert "--batch-size 32 --lr 0.005" in err  # the resume command keeps the run's settings


def test_a_final_save_that_cannot_be_written_keeps_the_model_elsewhere(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(cli.DATASET_DEFAULTS["digits"], "iw_samples", 20)
    out = tmp_path / "full-disk"
    real = os.replace

    def replace(source, target):  # the disk under out is full: its checkpoint cannot be put in place
        if str(out) in str(target):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(source, target)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    assert main(["train", "--epochs", "2", "--out", str(out), "--no-progress", "--hidden", "8"]) == 2
    err = capsys.readouterr().err
    rescued = next((tmp_path / "tmp").glob("minivae-rescued-*"))
    assert "No space left on device" in err and f"mv {rescued}/* {out}/" in err
    assert len(VAE.load(rescued / "model.npz").history_) == 2 and (rescued / "history.csv").exists()


def test_train_clears_what_saves_killed_outright_left_in_its_folder(tmp_path, monkeypatch):
    monkeypatch.setitem(cli.DATASET_DEFAULTS["digits"], "iw_samples", 0)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    out = tmp_path / "run"
    out.mkdir()
    stray = out / f".minivae-{int(dead.stdout)}-abcd.tmp"  # a save killed with kill -9
    stray.write_bytes(b"PK\x03\x04" + bytes(1000))
    assert main(["train", "--epochs", "0", "--out", str(out), "--no-progress", "--hidden", "8"]) == 0
    assert not stray.exists()
