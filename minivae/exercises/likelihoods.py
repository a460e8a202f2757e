"""Exercise 3, likelihoods: log-probabilities of the data, complete with their constants, and their gradients.

Values are per example, shape ``(N,)``, summed over pixels; gradients are of the
negative log-likelihood summed over the batch.
"""

import math

import numpy as np

from .backward import sigmoid
from .checking import Mistake, Part

LESSON = "03_likelihoods"
LOG_2PI = math.log(2 * math.pi)


def softplus(l):
    return np.logaddexp(0.0, l)


def batch(rng):
    return int(rng.integers(2, 7)), int(rng.integers(3, 9))


def bernoulli_case(rng):
    n, d = batch(rng)
    logits = 4 * rng.standard_normal((n, d))
    logits[0, 0] = rng.choice([-1, 1]) * rng.uniform(40, 800)  # a saturated unit: naive log(sigmoid) breaks here
    x = (rng.random((n, d)) < 0.5).astype(np.float64)
    x[0, 0] = float(logits[0, 0] < 0)  # ... and predicts its pixel wrongly
    return {"logits": logits, "x": x}


BERNOULLI = Part(
    name="bernoulli_log_prob", signature="bernoulli_log_prob(logits, x) -> log_p (N,)", lesson=LESSON,
    terms="loss",
    args=("logits", "x"), outputs=("log_p",), make_case=bernoulli_case,
    answer=lambda c: ((c["x"] * c["logits"] - softplus(c["logits"])).sum(axis=1),),
    extra={"nonfinite": "log(sigmoid(l)) and log(1 - sigmoid(l)) round to log(0) once |l| is large; write "
                        "log p = x l - softplus(l) with softplus(l) = np.logaddexp(0, l)"},
    mistakes=(
        Mistake("negative log-likelihood", "that is -log p, the loss; the part asks for log p itself",
                lambda c: ((softplus(c["logits"]) - c["x"] * c["logits"]).sum(axis=1),)),
        Mistake("one number for the batch", "it summed over the batch too; return one log-probability per example, "
                "summed over pixels only (axis=1)", lambda c: ((c["x"] * c["logits"] - softplus(c["logits"])).sum(),)),
    ),
)


# ---------------------------------------------------------------- binomial counts k of n trials
def binomial_case(rng):
    n, d = batch(rng)
    trials = int(rng.integers(2, 40))
    k = rng.integers(0, trials + 1, (n, d))
    k[0, 0] = rng.integers(1, trials)  # a count strictly between 0 and n, where log C(n, k) > 0
    return {"logits": 2 * rng.standard_normal((n, d)), "k": k.astype(np.float64), "n": trials}


def log_binom(c):
    lg = np.vectorize(math.lgamma)
    return (lg(c["n"] + 1.0) - lg(c["k"] + 1) - lg(c["n"] - c["k"] + 1)).sum(axis=1)


def binomial_kernel(c):
    return (c["k"] * c["logits"] - c["n"] * softplus(c["logits"])).sum(axis=1)


BINOMIAL = Part(
    name="binomial_log_prob", signature="binomial_log_prob(logits, k, n) -> log_p (N,)", lesson=LESSON,
    terms="gradient",
    args=("logits", "k", "n"), outputs=("log_p",), make_case=binomial_case,
    answer=lambda c: (log_binom(c) + binomial_kernel(c),),
    mistakes=(
        Mistake("missing binomial coefficient", "log C(n, k) is missing: it does not change the gradient, but "
                "without it the number is not a log-probability of the counts", lambda c: (binomial_kernel(c),)),
        Mistake("normaliser without n", "k log p + (n - k) log(1 - p) = k l - n softplus(l): the softplus carries n",
                lambda c: (log_binom(c) + (c["k"] * c["logits"] - softplus(c["logits"])).sum(axis=1),)),
        Mistake("proportion for count", "it treats k / n as a Bernoulli target; the counts k enter as they are",
                lambda c: (((c["k"] / c["n"]) * c["logits"] - softplus(c["logits"])).sum(axis=1),)),
    ),
)

BINOMIAL_GRAD = Part(
    name="binomial_backward", signature="binomial_backward(logits, k, n) -> dlogits", lesson=LESSON,
    args=("logits", "k", "n"), outputs=("dlogits",), make_case=binomial_case,
    answer=lambda c: (c["n"] * sigmoid(c["logits"]) - c["k"],),
    mistakes=(
        Mistake("missing n", "d/dl [n softplus(l) - k l] = n sigmoid(l) - k; the n is missing",
                lambda c: (sigmoid(c["logits"]) - c["k"],)),
        Mistake("BCE gradient without the sigmoid", "d softplus(l)/dl = sigmoid(l): it is n sigmoid(l) - k, "
                "not n l - k", lambda c: (c["n"] * c["logits"] - c["k"],)),
    ),
)


# ---------------------------------------------------------------- Gaussian with a learned variance per pixel
def gaussian_case(rng):
    n, d = batch(rng)
    return {"x": rng.standard_normal((n, d)), "mean": rng.standard_normal((n, d)),
            "logvar": rng.standard_normal((n, d))}


def gaussian_log_prob(c, const=LOG_2PI, scale=lambda lv: np.exp(lv), with_logvar=True):
    sq = (c["x"] - c["mean"]) ** 2 / scale(c["logvar"])
    return (-0.5 * (const + with_logvar * c["logvar"] + sq)).sum(axis=1)


GAUSSIAN = Part(
    name="gaussian_log_prob", signature="gaussian_log_prob(x, mean, logvar) -> log_p (N,)", lesson=LESSON,
    terms="sigma",
    args=("x", "mean", "logvar"), outputs=("log_p",), make_case=gaussian_case,
    answer=lambda c: (gaussian_log_prob(c),),
    mistakes=(
        Mistake("missing log 2 pi", "the constant -log(2 pi) / 2 per pixel is missing: without it the number is "
                "not a log-density", lambda c: (gaussian_log_prob(c, const=0.0),)),
        Mistake("divided by sigma", "the squared error is divided by sigma^2 = exp(logvar), not by sigma",
                lambda c: (gaussian_log_prob(c, scale=lambda lv: np.exp(lv / 2)),)),
        Mistake("missing -logvar / 2", "the normaliser -logvar / 2 per pixel is missing: with a learned variance "
                "it is what stops the variance from growing without end", lambda c: (gaussian_log_prob(c, with_logvar=False),)),
    ),
)


def gaussian_grads(c):
    inv_var = np.exp(-c["logvar"])
    diff = c["x"] - c["mean"]
    return -diff * inv_var, 0.5 * (1 - diff**2 * inv_var)


GAUSSIAN_GRAD = Part(
    name="gaussian_backward", signature="gaussian_backward(x, mean, logvar) -> (dmean, dlogvar)", lesson=LESSON,
    terms="sigma",
    args=("x", "mean", "logvar"), outputs=("dmean", "dlogvar"), make_case=gaussian_case, answer=gaussian_grads,
    mistakes=(
        Mistake("dlogvar without the normaliser", "dlogvar lost the 1/2 from the normaliser logvar / 2: it is "
                "(1 - (x - mean)^2 / sigma^2) / 2", lambda c: (gaussian_grads(c)[0], gaussian_grads(c)[1] - 0.5)),
        Mistake("divided by sigma", "dmean = -(x - mean) / sigma^2 with sigma^2 = exp(logvar); it divided by sigma",
                lambda c: (-(c["x"] - c["mean"]) * np.exp(-c["logvar"] / 2), gaussian_grads(c)[1])),
    ),
)

PARTS = (BERNOULLI, BINOMIAL, BINOMIAL_GRAD, GAUSSIAN, GAUSSIAN_GRAD)
