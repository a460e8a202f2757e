"""Exercise 12, two stochastic layers: the log importance weight of one draw of both layers, and the backward
pass of the first layer's learned prior ``p(z1|z2)``.

The conventions are :mod:`minivae.hierarchical`': rows ``m`` are draws. ``log_px`` (M,) is ``log p(x|z1)``;
``z1`` (M, L1) was drawn as ``mu1 + exp(logvar1 / 2) eps1`` and ``z2`` (M, L2) as ``mu2 + exp(logvar2 / 2)
eps2``; ``m`` and ``r`` (M, L1) are the mean and log-variance of ``p(z1|z2)`` that the top decoder gives for
that ``z2``. ``g`` (M,) is each row's weight in the loss ``sum_m g_m (-log p(z1_m|z2_m))``.
"""

import numpy as np

from .checking import Mistake, Part

LESSON = "12_two_layers"
LOG_2PI = np.log(2 * np.pi)


def weight_case(rng):
    rows, l1, l2 = int(rng.integers(2, 7)), int(rng.integers(2, 5)), int(rng.integers(1, 4))
    eps1, eps2 = rng.standard_normal((rows, l1)), rng.standard_normal((rows, l2))
    mu1, logvar1 = rng.standard_normal((rows, l1)), 0.5 * rng.standard_normal((rows, l1))
    mu2, logvar2 = rng.standard_normal((rows, l2)), 0.5 * rng.standard_normal((rows, l2))
    return {"log_px": -40 + 5 * rng.standard_normal(rows), "z1": mu1 + np.exp(0.5 * logvar1) * eps1, "eps1": eps1,
            "logvar1": logvar1, "z2": mu2 + np.exp(0.5 * logvar2) * eps2, "eps2": eps2, "logvar2": logvar2,
            "m": rng.standard_normal((rows, l1)), "r": 0.5 * rng.standard_normal((rows, l1))}


def log_normal(z, mean, logvar, half=0.5, scaled=True):
    """``log N(z; mean, diag(exp(logvar)))`` per row, optionally wrong."""
    square = (z - mean) ** 2 * (np.exp(-logvar) if scaled else 1)
    return -(half * square + 0.5 * (logvar + LOG_2PI)).sum(axis=1)


def log_weight(c, prior="learned", second=True, q_sign=-1.0, logvar_sign=1.0, half=0.5, scaled=True):
    z1, z2 = c["z1"], c["z2"]
    log_q1 = -0.5 * (logvar_sign * c["logvar1"] + c["eps1"] ** 2 + LOG_2PI).sum(axis=1)
    log_q2 = -0.5 * (logvar_sign * c["logvar2"] + c["eps2"] ** 2 + LOG_2PI).sum(axis=1)
    log_p1 = (log_normal(z1, c["m"], c["r"], half, scaled) if prior == "learned"
              else log_normal(z1, 0 * z1, 0 * z1))
    log_p2 = log_normal(z2, 0 * z2, 0 * z2)
    layer2 = (log_p2 + q_sign * log_q2) if second else 0
    return (c["log_px"] + log_p1 + q_sign * log_q1 + layer2,)


WEIGHT = Part(
    name="two_layer_log_weight",
    signature="two_layer_log_weight(log_px, z1, eps1, logvar1, z2, eps2, logvar2, m, r) -> log_w",
    lesson=LESSON, terms="w N x v logvar eps",
    args=("log_px", "z1", "eps1", "logvar1", "z2", "eps2", "logvar2", "m", "r"), outputs=("log_w",),
    make_case=weight_case, answer=log_weight,
    mistakes=(
        Mistake("standard prior for z1", "z1's prior is p(z1|z2) = N(m, exp(r)), which the draw of z2 sets; "
                "N(0, I) is z2's prior alone", lambda c: log_weight(c, prior="standard")),
        Mistake("second layer left out", "log w has both layers: log p(z2) - log q(z2|z1) belongs in it too",
                lambda c: log_weight(c, second=False)),
        Mistake("log q added", "the posterior's density divides the weight: log w = log p(x, z1, z2) - "
                "log q(z1|x) - log q(z2|z1)", lambda c: log_weight(c, q_sign=1.0)),
        Mistake("logvar's sign in log q", "log q = -(logvar + eps^2 + log 2 pi) / 2 per unit: a wider posterior has a "
                "lower density", lambda c: log_weight(c, logvar_sign=-1.0)),
        Mistake("no 1/2 on the prior's square", "log N(z1; m, v) = -(z1 - m)^2 / (2 v) - (log v + log 2 pi) / 2",
                lambda c: log_weight(c, half=1.0)),
        Mistake("variance left out of the prior's square", "the squared distance (z1 - m)^2 is divided by the "
                "prior's variance exp(r)", lambda c: log_weight(c, scaled=False)),
    ),
)


def prior_case(rng):
    rows, l1 = int(rng.integers(2, 7)), int(rng.integers(2, 5))
    return {"z1": 1.5 * rng.standard_normal((rows, l1)), "m": rng.standard_normal((rows, l1)),
            "r": 0.5 * rng.standard_normal((rows, l1)), "g": rng.uniform(0.1, 1, rows)}


def prior_backward(c, weighted=True, sign=1.0, half=0.5, with_minus_one=True, precision=True):
    z1, m, r = c["z1"], c["m"], c["r"]
    g = c["g"][:, None] if weighted else 1.0
    scaled = (z1 - m) * np.exp(-r if precision else r)  # (z1 - m) / v
    dr = -half * g * ((z1 - m) * scaled - (1 if with_minus_one else 0))
    return sign * g * scaled, -g * scaled, dr


PRIOR_BACKWARD = Part(
    name="conditional_prior_backward", signature="conditional_prior_backward(z1, m, r, g) -> (dz1, dm, dr)",
    lesson=LESSON, terms="v N z2 loss gradient",
    args=("z1", "m", "r", "g"), outputs=("dz1", "dm", "dr"), make_case=prior_case, answer=prior_backward,
    batch="z1",
    mistakes=(
        Mistake("rows not weighted", "each row's gradient carries its weight g in the loss",
                lambda c: prior_backward(c, weighted=False)),
        Mistake("dz1's sign", "the loss is -log p(z1|z2), which grows as z1 moves away from m: its gradient with "
                "respect to z1 is +g (z1 - m) / v", lambda c: prior_backward(c, sign=-1.0)),
        Mistake("v for 1/v", "v = exp(r) is the variance, and the Gaussian divides by it: (z1 - m) exp(-r)",
                lambda c: prior_backward(c, precision=False)),
        Mistake("no -1 in dr", "d(-log N)/dr = (1 - (z1 - m)^2 / v) / 2: the 1 comes from the normaliser's r / 2",
                lambda c: prior_backward(c, with_minus_one=False)),
        Mistake("no 1/2 in dr", "d(-log N)/dr = (1 - (z1 - m)^2 / v) / 2: both terms carry 1/2",
                lambda c: prior_backward(c, half=1.0)),
    ),
)

PARTS = (WEIGHT, PRIOR_BACKWARD)
