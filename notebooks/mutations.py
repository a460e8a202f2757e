"""Plant plausible bugs in minivae one at a time and report which notebooks, or which test, catch each.

A notebook "catches" a bug when one of its cells fails (an assert, or an
error) with the bug planted. A teaching notebook whose checks pass with a
wrong library proves nothing, so every bug in what a notebook teaches must be
caught by a notebook (``UNTAUGHT`` lists the bugs in places no notebook
teaches), and every bug must be caught by a test. This is slow (every
notebook runs once per bug: a few minutes a bug on two cores), so it is a
script, not a test:

    python notebooks/mutations.py                 # every bug, every notebook
    python notebooks/mutations.py --bugs 1 5 7    # some of them
    python notebooks/mutations.py --tests         # every bug against the quick test subset instead

Each bug is a one-line replacement in a copy of the package, put first on
the kernels' PYTHONPATH; the working tree is never touched. A replacement
that no longer matches the source is reported as an error, not skipped.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent / "minivae"
NOTEBOOKS = sorted(HERE.glob("[0-9][0-9]_*.ipynb"))

# (what the bug is, file, the correct line, the planted line)
BUGS = [
    ("sigma = exp(logvar), the log-variance taken as the log standard deviation", "layers.py",
     "sigma = xp.exp(0.5 * logvar)", "sigma = xp.exp(logvar)"),
    ("dsigma/dlogvar = sigma, the 1/2 missing", "layers.py",
     "dlogvar = dsigma * (sigma / 2)", "dlogvar = dsigma * sigma"),
    ("a fresh eps in backward instead of the one used in forward", "layers.py",
     "dsigma = dz * eps  # dz/dsigma = eps",
     "dsigma = dz * np.random.default_rng().standard_normal(eps.shape)  # dz/dsigma = eps"),
    ("the batch mean's 1/N missing from the gradient", "model.py",
     "dout *= 1.0 / N", "dout *= 1.0"),
    ("the importance-weighted estimate without its -log K", "evaluate.py",
     "out.append(m + xp.log(s) - math.log(K))", "out.append(m + xp.log(s))"),
    ("the optimal encoder's variances taken from the posterior's diagonal, diag(P^-1), not 1/diag(P)", "evaluate.py",
     '"encoder.logvar.b": -np.log(np.diag(P))', '"encoder.logvar.b": np.log(np.diag(np.linalg.inv(P)))'),
    ("elbo not averaging its n_samples reconstructions", "model.py",
     "return -(rec / n_samples) - kl", "return -rec - kl"),
    ("the Gaussian KL without its -1", "losses.py",
     "kl = 0.5 * (mu * mu + var - logvar - 1)", "kl = 0.5 * (mu * mu + var - logvar)"),
    ("dKL/dlogvar = sigma^2 / 2, the -1 missing", "losses.py",
     "dlogvar = 0.5 * (var - 1)  # dKL/dlogvar", "dlogvar = 0.5 * var  # dKL/dlogvar"),
    ("the Bernoulli loss with + x l instead of - x l", "losses.py",
     "log1p(s) - x * logits  # softplus(l) - x l", "log1p(s) + x * logits  # softplus(l) - x l"),
    ("ReLU's derivative passed everywhere", "layers.py",
     "return dy * (y > 0)", "return dy * 1"),
    ("tanh's derivative written as 1 - y", "layers.py",
     "return dy * (1 - y * y)", "return dy * (1 - y)"),
    ("the bias gradient averaged over the batch instead of summed", "layers.py",
     'dy.sum(axis=0, out=self.grads["b"])', 'dy.mean(axis=0, out=self.grads["b"])'),
    ("the binomial without log C(n, k)", "losses.py",
     "return nll - log_binom, dlogits", "return nll, dlogits"),
    ("the linear-Gaussian ELBO without the posterior variance's term", "evaluate.py",
     "sq = ((x - mu @ W - b) ** 2).sum(1) + np.exp(logvar) @ (W * W).sum(1)", "sq = ((x - mu @ W - b) ** 2).sum(1)"),
    ("the exact marginal's covariance without the noise variance", "evaluate.py",
     "cov = W.T @ W + std**2 * np.eye(D)", "cov = W.T @ W + std * np.eye(D)"),
    ("the Gaussian log-likelihood without its log std term", "losses.py",
     "D * (math.log(std) + 0.5 * LOG_2PI)", "D * (0.5 * LOG_2PI)"),
    ("the learned-variance Gaussian's dlogvar without its 1/2", "losses.py",
     "dlogvar = 0.5 * (1 - sq)  # d/dlogvar", "dlogvar = (1 - sq)  # d/dlogvar"),
    ("the learned-variance Gaussian's floor passing gradient below it", "likelihoods.py",
     "dlogvar *= logvar > self.MIN_LOGVAR", "dlogvar *= logvar > -1e300"),
    ("the continuous Bernoulli's series with a wrong cubic coefficient", "losses.py",
     "logits / 6 - 7 * logits * l2 / 360", "logits / 6 - 5 * logits * l2 / 360"),
    ("the effective sample size's running sum of squares rescaled once, not twice", "evaluate.py",
     "s2 = s2 * shift * shift + (w * w).sum(axis=1)", "s2 = s2 * shift + (w * w).sum(axis=1)"),
    ("a replicate mean's standard error without the 1/R of its variance", "evaluate.py",
     "math.sqrt(runs.var(axis=0, ddof=1).sum() / R) / N", "math.sqrt(runs.var(axis=0, ddof=1).sum()) / N"),
    ("active units counted at or above the threshold over the wrong axis", "evaluate.py",
     "variances = np.concatenate(means).astype(np.float64).var(axis=0)",
     "variances = np.concatenate(means).astype(np.float64).var(axis=1)[:model.latent_dim]"),
    ("the IWAE's labels repeated example by example while its samples are stacked sample by sample", "model.py",
     "labels = None if onehot is None else xp.concatenate([onehot] * K)",
     "labels = None if onehot is None else xp.repeat(onehot, K, axis=0)"),
    ("the aggregate posterior's mixture without its -log N", "aggregate.py",
     "log_weights = np.full(N, -math.log(N))", "log_weights = np.zeros(N)"),
    ("the seed-to-seed part of a standard error not divided by the number of seeds", "seeds.py",
     "seed_var = sum(v.mean(axis=1).var(ddof=1) / len(v) for v in runs)",
     "seed_var = sum(v.mean(axis=1).var(ddof=1) for v in runs)"),
    ("the planar map's log-determinant without tanh'", "flows.py",
     "det = 1 + (1 - t * t) * wu_hat", "det = 1 + wu_hat"),
    ("the planar map's backward without the determinant's path through t", "flows.py",
     "dt = dt - 2 * t * wu_hat * ddet", "dt = dt"),
    ("the invertibility constraint's m(a) without its -1", "flows.py",
     "wu_hat = softplus(xp, a) - 1  # m(a)", "wu_hat = softplus(xp, a)  # m(a)"),
    ("the flow's log q_0 without its direct -1/2 in dlogvar", "flows.py",
     "dlogvar -= 0.5 * w / N  # from log q_0(z_0|x), directly", "pass  # from log q_0(z_0|x), directly"),
    ("a mixture's log-density without its components' log-variances", "priors.py",
     "log_weights - 0.5 * (quad + logvars.sum(axis=1) + L * LOG_2PI)", "log_weights - 0.5 * (quad + L * LOG_2PI)"),
    ("a mixture's dlogvars without the -1 of the normaliser", "priors.py",
     "dlogvars = 0.5 * (g * (scaled * scaled * xp.exp(logvars)[None] - 1)).sum(axis=0)",
     "dlogvars = 0.5 * (g * (scaled * scaled * xp.exp(logvars)[None])).sum(axis=0)"),
    ("the mixture prior's logits gradient without the softmax's - pi", "priors.py",
     "dlog_weights - weights * dlog_weights.sum()", "dlog_weights"),
    ("the VampPrior's pseudo-inputs given no gradient", "priors.py",
     "self.grads[\"prior.pseudo_inputs\"][...] = dx[dmu.shape[0]:]", "self.grads[\"prior.pseudo_inputs\"][...] = 0"),
    ("M2's unlabelled bound without the classifier's entropy", "semisupervised.py",
     "unlabelled = (q * (bound - log_q)).sum(axis=1)  # sum_y q (L - log q) = sum_y q L + H(q)",
     "unlabelled = (q * bound).sum(axis=1)  # sum_y q (L - log q) = sum_y q L + H(q)"),
    ("M2's classifier gradient not centred by the softmax", "semisupervised.py",
     "unlabelled = q * (grad_q - (q * grad_q).sum(axis=1, keepdims=True))", "unlabelled = q * grad_q"),
    ("M2's importance weights without log p(y)", "semisupervised.py",
     "log_w = log_w.reshape(B, C, c) - math.log(C)  # + log p(y)", "log_w = log_w.reshape(B, C, c)  # + log p(y)"),
    ("the two-layer model's z1 without the gradient that comes back through the top encoder", "hierarchical.py",
     "dz1 = dz1 + self.top_encoder.backward(dmu2, dlogvar2)  # z2 was drawn from z1: the third path",
     "self.top_encoder.backward(dmu2, dlogvar2)  # z2 was drawn from z1: the third path"),
    ("the two-layer model's weight without log q(z2|z1)", "hierarchical.py",
     "return rec, log_q1 - log_p1, log_q2 - log_p2", "return rec, log_q1 - log_p1, -log_p2"),
    ("the first layer's prior's dr without the -1 of the normaliser", "hierarchical.py",
     "return gm * scaled, -gm * scaled, -0.5 * gm * ((z1 - m) * scaled - 1)",
     "return gm * scaled, -gm * scaled, -0.5 * gm * ((z1 - m) * scaled)"),
    ("the two-layer model's samples of z1 from N(0, I), not from p(z1|z2)", "hierarchical.py",
     "return m + self.xp.exp(0.5 * r) * self.draw_normal((n, self.latent_dim), rng)",
     "return self.draw_normal((n, self.latent_dim), rng)"),
]


# Bugs in places no notebook teaches, and why; the tests must catch them all the same.
LEARNED_VARIANCE = ("no lesson uses the learned-variance Gaussian; exercise 3 has the learner write one, "
                    "checked against the exercise's own reference")
UNTAUGHT = {
    "the IWAE's labels repeated example by example while its samples are stacked sample by sample":
        "no notebook trains a conditional model on the importance-weighted bound",
    "the continuous Bernoulli's series with a wrong cubic coefficient": "no notebook uses the continuous Bernoulli",
    "the learned-variance Gaussian's dlogvar without its 1/2": LEARNED_VARIANCE,
    "the learned-variance Gaussian's floor passing gradient below it": LEARNED_VARIANCE,
    "the effective sample size's running sum of squares rescaled once, not twice":
        "the rescale runs only when K exceeds one chunk of samples (16,384), which no notebook uses",
}


def plant(bug, folder):
    """A copy of the package in ``folder`` with ``bug`` planted."""
    _, name, good, bad = bug
    target = folder / "minivae"
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__"))
    path = target / name
    source = path.read_text()
    if source.count(good) != 1:
        raise ValueError(f"{name}: the line {good!r} is not in the source exactly once; update BUGS")
    text = source.replace(good, bad)
    if "np.random" in bad and "import numpy as np" not in text:
        text = "import numpy as np\n" + text
    path.write_text(text)


def with_bug(bug, judge):
    """``(judge(), seconds)`` with ``bug`` planted in a copy of the package put first on PYTHONPATH."""
    path = os.environ.get("PYTHONPATH", "")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        plant(bug, Path(folder))
        os.environ["PYTHONPATH"] = os.pathsep.join([folder, path]).rstrip(os.pathsep)  # the planted copy first
        try:
            result = judge()
        finally:
            os.environ["PYTHONPATH"] = path
    return result, time.perf_counter() - start


def catches(notebook):
    """True if some cell of ``notebook`` fails (with the planted package first on the path)."""
    nb = nbformat.read(notebook, as_version=4)
    try:
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(notebook.parent)}}).execute()
    except CellExecutionError:
        return True
    return False


def tests_catch():
    """The first test of the quick subset that fails (with the planted package first on the path), or None.

    Runs the ``pytest`` beside this Python rather than ``python -m pytest``, which would put the working
    tree's own ``minivae`` ahead of the planted copy.
    """
    pytest = Path(sys.executable).parent / "pytest"
    done = subprocess.run([str(pytest), "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider", "-rf"],
                          cwd=HERE.parent, capture_output=True, text=True)
    if done.returncode == 0:
        return None
    failed = [line.split()[1] for line in done.stdout.splitlines() if line.startswith(("FAILED ", "ERROR "))]
    return failed[0].split(" - ")[0] if failed else f"pytest exit status {done.returncode}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bugs", type=int, nargs="*", help="numbers of the bugs to plant (default: all)")
    parser.add_argument("--seed", default="0", help="MINIVAE_NOTEBOOK_SEED for the notebooks (default 0)")
    parser.add_argument("--tests", action="store_true",
                        help="run the quick test subset (pytest -m 'not slow') against each bug, "
                             "instead of the notebooks")
    args = parser.parse_args()
    if args.tests:
        return main_tests(args.bugs or range(1, len(BUGS) + 1))
    chosen = args.bugs or range(1, len(BUGS) + 1)
    os.environ["MINIVAE_NOTEBOOK_SEED"] = args.seed
    names = [nb.name.split("_")[0] for nb in NOTEBOOKS]
    print(f"{'bug':<4} {'caught by notebooks':<22} what was planted")
    missed = []
    for number in chosen:
        bug = BUGS[number - 1]
        caught, seconds = with_bug(bug, lambda: [name for name, nb in zip(names, NOTEBOOKS) if catches(nb)])
        verdict = ", ".join(caught) or ("none: not taught" if bug[0] in UNTAUGHT else "NONE")
        print(f"{number:<4} {verdict:<22} {bug[0]}  ({seconds:.0f} s)", flush=True)
        if not caught and bug[0] not in UNTAUGHT:
            missed.append(number)
    print(f"{len(chosen) - len(missed)} of {len(chosen)} bugs caught" + (f"; missed: {missed}" if missed else ""))
    return 1 if missed else 0


def main_tests(chosen):
    """Each bug against the quick test subset: every bug must make some test fail (the first one is named)."""
    unplanted = tests_catch()
    if unplanted:
        print(f"the tests fail with no bug planted ({unplanted}): fix that first")
        return 2
    missed = []
    for number in chosen:
        bug = BUGS[number - 1]
        caught, seconds = with_bug(bug, tests_catch)
        print(f"{number:<4} {caught or 'MISSED'}\n     {bug[0]}  ({seconds:.0f} s)", flush=True)
        if not caught:
            missed.append(number)
    print(f"{len(chosen) - len(missed)} of {len(chosen)} bugs caught by the tests"
          + (f"; missed: {missed}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
