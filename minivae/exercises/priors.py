"""Exercise 10, learned priors: a mixture of Gaussians' log-density with its responsibilities, and its backward
pass to the latent points and to every parameter of the mixture.

The conventions are :mod:`minivae.priors`': rows ``z`` (M, L); ``C`` components with normalised log-weights
``log_weights`` (C,), means ``means`` (C, L) and log-variances ``logvars`` (C, L); ``log p(z)`` per row (M,) and
the responsibilities ``r`` (M, C), each row of which sums to 1. ``dlog_p`` (M,) is the loss's gradient with
respect to each row's ``log p(z)``.
"""

import numpy as np

from .checking import Mistake, Part

LESSON = "10_priors"
LOG_2PI = np.log(2 * np.pi)


def mixture_case(rng):
    m, dims, c = int(rng.integers(2, 8)), int(rng.integers(2, 4)), int(rng.integers(2, 5))
    logits = rng.standard_normal(c)
    return {"z": 1.5 * rng.standard_normal((m, dims)), "log_weights": logits - np.log(np.exp(logits).sum()),
            "means": rng.standard_normal((c, dims)), "logvars": 0.5 * rng.standard_normal((c, dims)),
            "dlog_p": rng.standard_normal(m)}


def joint(c, half=0.5, with_logdet=True, with_weights=True, var_in_quad=True):
    """``log pi_c + log N(z; m_c, v_c)`` for every row and component, (M, C), optionally wrong."""
    z, lw, m, s = c["z"], c["log_weights"], c["means"], c["logvars"]
    d = z[:, None, :] - m[None]  # (M, C, L)
    quad = (d * d / (np.exp(s)[None] if var_in_quad else 1)).sum(axis=2)
    logdet = s.sum(axis=1) if with_logdet else 0
    return (lw if with_weights else 0) - half * quad - 0.5 * (logdet + z.shape[1] * LOG_2PI)


def density(c, combine="logsumexp", **wrong):
    a = joint(c, **wrong)
    if combine == "max":
        log_p = a.max(axis=1)
    elif combine == "mean":
        log_p = np.log(np.exp(a).mean(axis=1))
    else:
        top = a.max(axis=1, keepdims=True)
        log_p = top[:, 0] + np.log(np.exp(a - top).sum(axis=1))
    return log_p, np.exp(a - log_p[:, None])


DENSITY = Part(
    name="mixture_log_density", signature="mixture_log_density(z, log_weights, means, logvars) -> (log_p, r)",
    lesson=LESSON, terms="N m v",
    args=("z", "log_weights", "means", "logvars"), outputs=("log_p", "r"), make_case=mixture_case, answer=density,
    mistakes=(
        Mistake("max for the sum", "p(z) sums the components: log p = logsumexp_c(log pi_c + log N_c), not the "
                "largest term alone (that is a lower bound)", lambda c: density(c, combine="max")),
        Mistake("weights left out", "each component enters with its weight: log pi_c plus the component's Gaussian log-density",
                lambda c: density(c, with_weights=False)),
        Mistake("log-determinant left out", "log N(z; m, v) = -((z - m)^2 / v + log v + log 2 pi) / 2 per dimension: "
                "the log v term (the normaliser) is missing", lambda c: density(c, with_logdet=False)),
        Mistake("variance left out of the square", "the squared distance is divided by the component's variance "
                "v = exp(logvars)", lambda c: density(c, var_in_quad=False)),
        Mistake("no 1/2 on the square", "log N = -(z - m)^2 / (2 v) - ...: the square carries 1/2",
                lambda c: density(c, half=1.0)),
    ),
)


def backward(c, weighted=True, sign=1.0, half=0.5, with_minus_one=True, grad_weights=True):
    z, m, s, g_row, r = c["z"], c["means"], c["logvars"], c["dlog_p"], c["r"]
    g = r * g_row[:, None] if weighted else np.broadcast_to(g_row[:, None], r.shape)
    v = np.exp(s)
    d = z[:, None, :] - m[None]  # (M, C, L)
    dz = sign * (g[:, :, None] * -d / v[None]).sum(axis=1)
    dmeans = (g[:, :, None] * d / v[None]).sum(axis=0)
    dlogvars = half * (g[:, :, None] * (d * d / v[None] - (1 if with_minus_one else 0))).sum(axis=0)
    dlog_weights = g.sum(axis=0) if grad_weights else np.zeros(len(m))
    return dz, dmeans, dlogvars, dlog_weights


BACKWARD = Part(
    name="mixture_backward",
    signature="mixture_backward(z, r, means, logvars, dlog_p) -> (dz, dmeans, dlogvars, dlog_weights)",
    lesson=LESSON, terms="N m v gradient",
    args=("z", "r", "means", "logvars", "dlog_p"), outputs=("dz", "dmeans", "dlogvars", "dlog_weights"),
    make_case=lambda rng: (lambda c: {**c, "r": density(c)[1]})(mixture_case(rng)), answer=backward, batch="z",
    mistakes=(
        Mistake("responsibilities left out", "each component's derivative counts in proportion to its share of "
                "p(z): d log p / d m_c = r_c (z - m_c) / v_c, with r_c = pi_c N_c(z) / p(z)",
                lambda c: backward(c, weighted=False)),
        Mistake("dz's sign", "a Gaussian's log-density has the gradient (means_c - z) / v_c with respect to z: log p falls as z moves away "
                "from a mean",
                lambda c: backward(c, sign=-1.0)),
        Mistake("no -1 in dlogvars", "d log N / ds = ((z - m)^2 / v - 1) / 2 for s = log v: the -1 comes from the "
                "normaliser's -s / 2", lambda c: backward(c, with_minus_one=False)),
        Mistake("no 1/2 in dlogvars", "d log N / ds = ((z - m)^2 / v - 1) / 2: both terms carry 1/2",
                lambda c: backward(c, half=1.0)),
        Mistake("no gradient to the weights", "d log p / d log pi_c = r_c: summed over the rows with dlog_p, the "
                "weights learn too", lambda c: backward(c, grad_weights=False)),
    ),
)

PARTS = (DENSITY, BACKWARD)
