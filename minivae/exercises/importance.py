"""Exercise 6, importance sampling: log p(x) from K weighted samples, checked against an exact answer.

The model is linear-Gaussian, with notebook 1's conventions (``W`` is (L, D),
a code is a row, ``sigma_x`` the decoder's standard deviation), so its
``log p(x)`` is known exactly::

    p(z) = N(0, I_L),  p(x|z) = N(z W + b, sigma_x^2 I_D)  =>  p(x) = N(b, W^T W + sigma_x^2 I_D)

and any Gaussian ``q(z|x) = N(mu, diag(exp(logvar)))`` is a proposal:
``log w_s = log p(z_s) + log p(x|z_s) - log q(z_s|x)`` and
``log p(x) ~ log (1/S) sum_s w_s``, computed with a log-sum-exp.
"""

import math

import numpy as np

from .checking import Mistake, Part

LESSON = "06_importance_weighted"
LOG_2PI = math.log(2 * math.pi)


def log_normal(x, mean, var):
    """``log N(x; mean, diag(var))`` summed over the last axis."""
    return -0.5 * (np.log(var) + (x - mean) ** 2 / var + LOG_2PI).sum(axis=-1)


# ---------------------------------------------------------------- a streaming log-sum-exp
def chunks_case(rng):
    offset = float(rng.choice([-1000.0, 0.0, 750.0]))
    chunks = [rng.standard_normal(int(rng.integers(1, 8))) + offset for _ in range(int(rng.integers(2, 6)))]
    chunks.sort(key=np.max)  # ascending maxima: the running maximum moves with every chunk, the hard case
    return {"chunks": chunks}


def lse(a):
    m = np.max(a)
    return m + np.log(np.exp(a - m).sum())


def stale_sum(chunks):
    """The running sum kept at an old maximum and never rescaled: the mistake, written out."""
    m, s = -np.inf, 0.0
    for c in chunks:
        m = max(m, float(np.max(c)))
        s += np.exp(c - m).sum()
    return m + np.log(s)


LOGSUMEXP = Part(
    name="streaming_logsumexp", signature="streaming_logsumexp(chunks) -> float", lesson=LESSON,
    terms="m",
    args=("chunks",), outputs=("logsumexp",), make_case=chunks_case,
    answer=lambda c: (lse(np.concatenate(c["chunks"])),),
    extra={"nonfinite": "A log-sum-exp without the max shift overflows (or underflows to log 0): keep the running "
                        "maximum m and sum exp(a - m)"},
    mistakes=(
        Mistake("running sum not rescaled", "when the running maximum grows from m to m', the sum kept so far must "
                "be rescaled by exp(m - m')", lambda c: (stale_sum(c["chunks"]),)),
        Mistake("log-mean-exp", "it averaged; a log-sum-exp sums (the 1/K of an average is a separate - log K)",
                lambda c: (lse(np.concatenate(c["chunks"])) - np.log(sum(map(len, c["chunks"]))),)),
    ),
)


# ---------------------------------------------------------------- the log-weights of the linear-Gaussian model
def linear_case(rng):
    d, k, s = int(rng.integers(2, 7)), int(rng.integers(1, 4)), int(rng.integers(3, 30))
    W, b = rng.standard_normal((k, d)), rng.standard_normal(d)
    sigma_x = float(rng.uniform(0.3, 1.5))
    z_true = rng.standard_normal(k)
    x = z_true @ W + b + sigma_x * rng.standard_normal(d)
    mu, logvar = rng.standard_normal(k) * 0.5, rng.standard_normal(k) * 0.5 - 1
    z = mu + np.exp(logvar / 2) * rng.standard_normal((s, k))
    return {"x": x, "z": z, "W": W, "b": b, "sigma_x": sigma_x, "mu": mu, "logvar": logvar}


def log_joint(c):
    return log_normal(c["z"], 0.0, np.ones_like(c["mu"])) + log_normal(c["x"], c["z"] @ c["W"] + c["b"],
                                                                      np.full_like(c["x"], c["sigma_x"] ** 2))


def log_q(c, var=lambda logvar: np.exp(logvar)):
    return log_normal(c["z"], c["mu"], var(c["logvar"]))


LOG_WEIGHTS = Part(
    name="log_weights", signature="log_weights(x, z, W, b, sigma_x, mu, logvar) -> log_w (S,)", lesson=LESSON,
    terms="N",
    args=("x", "z", "W", "b", "sigma_x", "mu", "logvar"), outputs=("log_w",), make_case=linear_case,
    answer=lambda c: (log_joint(c) - log_q(c),),
    mistakes=(
        Mistake("log q missing", "the weight is p(x, z) / q(z|x): subtract log q(z|x)", lambda c: (log_joint(c),)),
        Mistake("log q added", "the weight divides by q(z|x): subtract log q(z|x), do not add it",
                lambda c: (log_joint(c) + log_q(c),)),
        Mistake("prior missing", "p(x, z) = p(z) p(x|z): the prior's log N(z; 0, I) is missing",
                lambda c: (log_normal(c["x"], c["z"] @ c["W"] + c["b"], np.full_like(c["x"], c["sigma_x"] ** 2))
                           - log_q(c),)),
        Mistake("exp(logvar) as the standard deviation", "q's variance is exp(logvar) (its standard deviation "
                "exp(logvar / 2)); it squared exp(logvar)",
                lambda c: (log_joint(c) - log_q(c, var=lambda lv: np.exp(2 * lv)),)),
        Mistake("sigma_x as a variance", "sigma_x is the standard deviation of p(x|z): its variance is sigma_x^2",
                lambda c: (log_normal(c["z"], 0.0, np.ones_like(c["mu"])) + log_normal(
                    c["x"], c["z"] @ c["W"] + c["b"], np.full_like(c["x"], c["sigma_x"])) - log_q(c),)),
    ),
)


# ---------------------------------------------------------------- the K-sample estimate
def log_w_case(rng):
    offset = float(rng.choice([-1000.0, 0.0, 750.0]))
    return {"log_w": rng.standard_normal(int(rng.integers(2, 50))) * rng.uniform(0.1, 5) + offset}


IW = Part(
    name="iw_estimate", signature="iw_estimate(log_w) -> float", lesson=LESSON,
    args=("log_w",), outputs=("log_p",), make_case=log_w_case,
    answer=lambda c: (lse(c["log_w"]) - np.log(len(c["log_w"])),),
    extra={"nonfinite": "exp of a log-weight near -1000 or +750 underflows or overflows: shift by the maximum "
                        "(a log-sum-exp)"},
    mistakes=(
        Mistake("missing log K", "the bound is the log of the *average* weight: subtract log K from the log-sum-exp",
                lambda c: (lse(c["log_w"]),)),
        Mistake("ELBO instead", "that is the mean of the log-weights, the ELBO; the importance-weighted bound is "
                "the log of the mean weight", lambda c: (c["log_w"].mean(),)),
    ),
)


# ---------------------------------------------------------------- the exact answer
def exact_answer(c, const=True, half_logdet=True):
    d = len(c["x"])
    cov = c["W"].T @ c["W"] + c["sigma_x"] ** 2 * np.eye(d)
    _, logdet = np.linalg.slogdet(cov)
    r = c["x"] - c["b"]
    return (-0.5 * (logdet * (1 if half_logdet else 2) + r @ np.linalg.solve(cov, r) + (d * LOG_2PI if const else 0)),)


EXACT = Part(
    name="exact_log_likelihood", signature="exact_log_likelihood(x, W, b, sigma_x) -> float", lesson=LESSON,
    terms="sigma",
    args=("x", "W", "b", "sigma_x"), outputs=("log_p",), make_case=linear_case, answer=exact_answer,
    mistakes=(
        Mistake("log-determinant not halved", "the normaliser is -(1/2) log det(C), like the -(1/2) log sigma^2 of "
                "one dimension", lambda c: exact_answer(c, half_logdet=False)),
        Mistake("missing log 2 pi", "the constant -D log(2 pi) / 2 is missing", lambda c: exact_answer(c, const=False)),
    ),
)

PARTS = (LOGSUMEXP, LOG_WEIGHTS, IW, EXACT)
