"""Exercise 2, sampling: the reparameterised sample, two gradient estimators, and a standard error.

For ``E_q[f(z)]`` with ``q = N(mu, sigma^2)`` per dimension and ``z = mu + sigma * eps``:

- the pathwise (reparameterisation) estimator averages ``f'(z) dz/dmu = f'(z)`` and
  ``f'(z) dz/dlogvar = f'(z) eps sigma / 2``;
- the score-function estimator averages ``f(z) d log q(z)/dmu = f(z) eps / sigma`` and
  ``f(z) d log q(z)/dlogvar = f(z) (eps^2 - 1) / 2``.
"""

import numpy as np

from .checking import Mistake, Part

LESSON = "02_sampling"

# Test functions with known derivatives: f, f'
FUNCTIONS = (
    (lambda z: z**2, lambda z: 2 * z),
    (np.sin, np.cos),
    (lambda z: np.logaddexp(0, z), lambda z: np.exp(-np.logaddexp(0, -z))),
)


def gaussian_case(rng):
    k, s = int(rng.integers(1, 5)), int(rng.integers(5, 40))
    f, df = FUNCTIONS[int(rng.integers(len(FUNCTIONS)))]
    return {"mu": rng.standard_normal(k), "logvar": rng.standard_normal(k), "eps": rng.standard_normal((s, k)),
            "f": f, "df": df}


def sigma(c):
    return np.exp(c["logvar"] / 2)


def z(c):
    return c["mu"] + sigma(c) * c["eps"]


# ---------------------------------------------------------------- the sample
SAMPLE_Z = Part(
    name="sample_z", signature="sample_z(mu, logvar, eps) -> z", lesson=LESSON,
    terms="sigma",
    args=("mu", "logvar", "eps"), outputs=("z",), make_case=gaussian_case, answer=lambda c: (z(c),),
    mistakes=(
        Mistake("exp(logvar) as the standard deviation",
                "it scales eps by exp(logvar), which is the variance sigma^2; the standard deviation is "
                "sigma = exp(logvar / 2)", lambda c: (c["mu"] + np.exp(c["logvar"]) * c["eps"],)),
        Mistake("logvar not exponentiated", "logvar is log sigma^2; sigma = exp(logvar / 2)",
                lambda c: (c["mu"] + c["logvar"] * c["eps"],)),
        Mistake("sqrt of logvar", "sigma = exp(logvar / 2), not sqrt(logvar)",
                lambda c: (c["mu"] + np.sqrt(np.abs(c["logvar"])) * c["eps"],)),
    ),
)


# ---------------------------------------------------------------- the pathwise estimator
def pathwise_answer(c):
    d = c["df"](z(c))  # (S, K)
    return d.mean(axis=0), (d * c["eps"] * sigma(c) / 2).mean(axis=0)


PATHWISE = Part(
    name="pathwise_gradient", signature="pathwise_gradient(df, mu, logvar, eps) -> (gmu, glogvar)", lesson=LESSON,
    terms="z dz dlogvar sigma samples",
    args=("df", "mu", "logvar", "eps"), outputs=("gmu", "glogvar"), make_case=gaussian_case, answer=pathwise_answer,
    mistakes=(
        Mistake("variance for sigma", "dz/dlogvar = eps * sigma / 2 with sigma = exp(logvar / 2); it used exp(logvar)",
                lambda c: (pathwise_answer(c)[0], (c["df"](z(c)) * c["eps"] * np.exp(c["logvar"]) / 2).mean(axis=0))),
        Mistake("chain stopped at sigma", "dz/dlogvar = dz/dsigma * dsigma/dlogvar = eps * sigma / 2; "
                "the sigma / 2 is missing", lambda c: (pathwise_answer(c)[0], (c["df"](z(c)) * c["eps"]).mean(axis=0))),
        Mistake("summed, not averaged", "an estimator of an expectation averages over the samples (axis 0); "
                "it summed them", lambda c: tuple(g * c["eps"].shape[0] for g in pathwise_answer(c))),
    ),
)


# ---------------------------------------------------------------- the score-function estimator
def score_answer(c):
    fz, eps = c["f"](z(c)), c["eps"]
    return (fz * eps / sigma(c)).mean(axis=0), (fz * (eps**2 - 1) / 2).mean(axis=0)


SCORE = Part(
    name="score_function_gradient", signature="score_function_gradient(f, mu, logvar, eps) -> (gmu, glogvar)",
    terms="z dmu dlogvar sigma",
    lesson=LESSON, args=("f", "mu", "logvar", "eps"), outputs=("gmu", "glogvar"), make_case=gaussian_case,
    answer=score_answer,
    mistakes=(
        Mistake("score times sigma", "d log q/dmu = (z - mu) / sigma^2 = eps / sigma; it multiplied by sigma",
                lambda c: ((c["f"](z(c)) * c["eps"] * sigma(c)).mean(axis=0), score_answer(c)[1])),
        Mistake("score without sigma", "d log q/dmu = (z - mu) / sigma^2 = eps / sigma, not eps",
                lambda c: ((c["f"](z(c)) * c["eps"]).mean(axis=0), score_answer(c)[1])),
        Mistake("score without the normaliser", "d log q/dlogvar has two terms: (eps^2 - 1) / 2; the -1/2 comes from "
                "the normaliser -logvar / 2", lambda c: (score_answer(c)[0], (c["f"](z(c)) * c["eps"] ** 2 / 2).mean(axis=0))),
        Mistake("pathwise instead of score", "that is the pathwise estimator; the score-function one multiplies "
                "f(z) (not f'(z)) by d log q/dtheta", lambda c: pathwise_answer({**c, "df": c["f"]})),
    ),
)


# ---------------------------------------------------------------- the standard error of a mean
def se_case(rng):
    s, k = int(rng.integers(4, 30)), int(rng.integers(1, 4))
    return {"samples": rng.standard_normal((s, k)) * rng.uniform(0.1, 10) + rng.standard_normal(k)}


SE = Part(
    name="standard_error", signature="standard_error(samples) -> se", lesson=LESSON,
    terms="n",
    args=("samples",), outputs=("se",), make_case=se_case,
    answer=lambda c: (c["samples"].std(axis=0, ddof=1) / np.sqrt(len(c["samples"])),),
    mistakes=(
        Mistake("divided by n", "the sample variance divides by n - 1 (ddof=1); dividing by n underestimates it",
                lambda c: (c["samples"].std(axis=0) / np.sqrt(len(c["samples"])),)),
        Mistake("spread of one sample", "that is the standard deviation of one sample; the mean of n samples "
                "varies sqrt(n) times less: divide by sqrt(n)", lambda c: (c["samples"].std(axis=0, ddof=1),)),
        Mistake("variance for standard deviation", "it used the variance where the standard deviation belongs "
                "(take the square root)", lambda c: (c["samples"].var(axis=0, ddof=1) / np.sqrt(len(c["samples"])),)),
        Mistake("divided by n, not sqrt(n)", "the standard error is std / sqrt(n), not std / n",
                lambda c: (c["samples"].std(axis=0, ddof=1) / len(c["samples"]),)),
    ),
)

PARTS = (SAMPLE_Z, PATHWISE, SCORE, SE)
