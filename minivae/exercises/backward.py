"""Exercise 1, backward passes: a dense layer, tanh, the sampling layer, BCE from logits, the KL term.

Each right answer is the derivative written out in float64; ``tests/test_exercises.py``
proves each one against finite differences.
"""

import numpy as np

from .checking import Mistake, Part

LESSON = "01_backward_passes"


def sizes(rng):
    """Batch, input and output sizes, all different, so that a transpose cannot hide."""
    return (int(v) for v in rng.choice(np.arange(2, 9), size=3, replace=False))


def sigmoid(l):
    return np.exp(-np.logaddexp(0.0, -l))  # 1 / (1 + e^-l), without overflow


# ---------------------------------------------------------------- dense layer: y = x W + b
def dense_case(rng):
    n, d, h = sizes(rng)
    return {"dy": rng.standard_normal((n, h)), "x": rng.standard_normal((n, d)), "W": rng.standard_normal((d, h))}


def dense_answer(c):
    return c["dy"] @ c["W"].T, c["x"].T @ c["dy"], c["dy"].sum(axis=0)


def dense_with(dx=None, dW=None, db=None):
    def answer(c):
        right = dense_answer(c)
        return (dx(c) if dx else right[0], dW(c) if dW else right[1], db(c) if db else right[2])
    return answer


DENSE = Part(
    name="dense_backward", signature="dense_backward(dy, x, W) -> (dx, dW, db)", lesson=LESSON,
    terms="b N gradient",
    args=("dy", "x", "W"), outputs=("dx", "dW", "db"), make_case=dense_case, answer=dense_answer, batch="dy",
    mistakes=(
        Mistake("bias gradient averaged", "db is the mean of dy over the batch; b is added to every row, so its "
                "gradient is the sum, dy.sum(axis=0)", dense_with(db=lambda c: c["dy"].mean(axis=0))),
        Mistake("bias gradient not summed", "db still has one row per example: b is added to every row, so sum "
                "the rows, dy.sum(axis=0)", dense_with(db=lambda c: c["dy"])),
    ),
)


# ---------------------------------------------------------------- tanh: y = tanh(x)
def tanh_case(rng):
    n, d, _ = sizes(rng)
    return {"dy": rng.standard_normal((n, d)), "y": np.tanh(1.5 * rng.standard_normal((n, d)))}


TANH = Part(
    name="tanh_backward", signature="tanh_backward(dy, y) -> dx", lesson=LESSON,
    terms="x",
    args=("dy", "y"), outputs=("dx",), make_case=tanh_case, answer=lambda c: (c["dy"] * (1 - c["y"] ** 2),),
    mistakes=(
        Mistake("tanh' as 1 - y", "tanh'(x) was written as 1 - y; it is 1 - tanh(x)^2 = 1 - y**2",
                lambda c: (c["dy"] * (1 - c["y"]),)),
        Mistake("tanh applied twice", "y is already tanh(x): the derivative is 1 - y**2, not 1 - tanh(y)**2",
                lambda c: (c["dy"] * (1 - np.tanh(c["y"]) ** 2),)),
        Mistake("no upstream gradient", "the chain rule is missing: multiply the local derivative by dy",
                lambda c: (1 - c["y"] ** 2,)),
    ),
)


# ---------------------------------------------------------------- sampling: z = mu + exp(logvar / 2) * eps
def sample_case(rng):
    n, k, _ = sizes(rng)
    return {"dz": rng.standard_normal((n, k)), "logvar": rng.standard_normal((n, k)), "eps": rng.standard_normal((n, k))}


def sample_answer(c):
    sigma = np.exp(c["logvar"] / 2)
    return c["dz"], c["dz"] * c["eps"] * sigma / 2


SAMPLE = Part(
    name="sample_backward", signature="sample_backward(dz, logvar, eps) -> (dmu, dlogvar)", lesson=LESSON,
    terms="z mu sigma",
    args=("dz", "logvar", "eps"), outputs=("dmu", "dlogvar"), make_case=sample_case, answer=sample_answer,
    mistakes=(
        Mistake("variance for sigma", "it uses sigma^2 = exp(logvar) where sigma = exp(logvar / 2) belongs: "
                "dsigma/dlogvar = sigma / 2",
                lambda c: (c["dz"], c["dz"] * c["eps"] * np.exp(c["logvar"]) / 2)),
        Mistake("chain stopped at sigma", "it stops at dz/dsigma = eps; logvar reaches z through sigma, so "
                "multiply by dsigma/dlogvar = sigma / 2", lambda c: (c["dz"], c["dz"] * c["eps"])),
        Mistake("dz/dmu = eps", "dz/dmu is 1 (z = mu + sigma * eps), so dmu = dz",
                lambda c: (c["dz"] * c["eps"], sample_answer(c)[1])),
    ),
)


# ---------------------------------------------------------------- BCE from logits: sum softplus(l) - x l
def bce_case(rng):
    n, d, _ = sizes(rng)
    return {"logits": 3 * rng.standard_normal((n, d)), "x": rng.random((n, d))}


BCE = Part(
    name="bce_backward", signature="bce_backward(logits, x) -> dlogits", lesson=LESSON,
    terms="gradient p",
    args=("logits", "x"), outputs=("dlogits",), make_case=bce_case,
    answer=lambda c: (sigmoid(c["logits"]) - c["x"],),
    mistakes=(
        Mistake("BCE gradient without the sigmoid", "BCE's gradient was written without the sigmoid: "
                "d softplus(l)/dl = sigmoid(l), so dlogits = sigmoid(l) - x", lambda c: (c["logits"] - c["x"],)),
        Mistake("gradient with respect to p", "that is the gradient with respect to p = sigmoid(l); multiply by "
                "dp/dl = p (1 - p), which leaves sigmoid(l) - x",
                lambda c: ((1 - c["x"]) / (1 - sigmoid(c["logits"])) - c["x"] / sigmoid(c["logits"]),)),
    ),
)


# ---------------------------------------------------------------- KL: 1/2 sum mu^2 + exp(logvar) - logvar - 1
def kl_case(rng):
    n, k, _ = sizes(rng)
    return {"mu": rng.standard_normal((n, k)), "logvar": rng.standard_normal((n, k))}


KL = Part(
    name="kl_backward", signature="kl_backward(mu, logvar) -> (dmu, dlogvar)", lesson=LESSON,
    terms="KL sigma",
    args=("mu", "logvar"), outputs=("dmu", "dlogvar"), make_case=kl_case,
    answer=lambda c: (c["mu"], (np.exp(c["logvar"]) - 1) / 2),
    mistakes=(
        Mistake("KL forgot -logvar", "dlogvar lost the -1 that comes from the -logvar term: it is (exp(logvar) - 1) / 2",
                lambda c: (c["mu"], np.exp(c["logvar"]) / 2)),
        Mistake("sigma for variance in KL", "the KL holds sigma^2 = exp(logvar), so its derivative is exp(logvar) / 2, "
                "not one with exp(logvar / 2)", lambda c: (c["mu"], (np.exp(c["logvar"] / 2) - 1) / 2)),
    ),
)

PARTS = (DENSE, TANH, SAMPLE, BCE, KL)
