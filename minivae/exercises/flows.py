"""Exercise 9, planar flows: one map forward with its log-determinant, the constraint that keeps it invertible,
and the map's backward pass.

The conventions are :mod:`minivae.flows`': rows ``z`` (N, L); one map ``z + u tanh(w . z + b)`` with vectors
``u``, ``w`` (L,) and a number ``b`` (shape (1,)); its log-determinant ``log |1 + (1 - t^2) w . u|`` per row
(N,), with ``t = tanh(w . z + b)``. In ``planar_forward`` and ``planar_backward`` the ``u`` given is the one
the map uses (already constrained); ``constrained_u`` makes it from a free one.
"""

import numpy as np

from .checking import Mistake, Part

LESSON = "09_flows"


def flow_case(rng):
    n, dims = int(rng.integers(2, 8)), int(rng.integers(2, 5))
    w = rng.standard_normal(dims)
    u = rng.standard_normal(dims) * 0.8
    u = u + (max(-0.6, w @ u) - w @ u) / (w @ w) * w  # w . u >= -0.6: the determinant stays above 0.4
    return {"z": rng.standard_normal((n, dims)), "u": u, "w": w, "b": rng.standard_normal(1),
            "dz_next": rng.standard_normal((n, dims)), "dlogdet": rng.standard_normal(n)}


def forward(c, slope=lambda t: 1 - t * t, wu=True, per_row=True):
    z, u, w, b = c["z"], c["u"], c["w"], c["b"]
    t = np.tanh(z @ w + b[0])
    det = 1 + slope(t) * (w @ u if wu else 1.0)
    logdet = np.log(np.abs(det))
    return z + t[:, None] * u, logdet if per_row else np.full_like(logdet, logdet.sum())


FORWARD = Part(
    name="planar_forward", signature="planar_forward(z, u, w, b) -> (z_next, logdet)", lesson=LESSON,
    terms="t N psi map determinant Jacobian hyperplane",
    args=("z", "u", "w", "b"), outputs=("z_next", "logdet"), make_case=flow_case, answer=forward,
    mistakes=(
        Mistake("no tanh'", "the Jacobian is I + u psi^T with psi = tanh'(w . z + b) w = (1 - t^2) w: the determinant "
                "is 1 + (1 - t^2) w . u, not 1 + w . u", lambda c: forward(c, slope=lambda t: np.ones_like(t))),
        Mistake("tanh' as 1 - t", "tanh' is 1 - t^2, from the output t = tanh(a)", lambda c: forward(c, slope=lambda t: 1 - t)),
        Mistake("t for tanh'", "the determinant needs the derivative of tanh, 1 - t^2, not t itself",
                lambda c: forward(c, slope=lambda t: t)),
        Mistake("summed over rows", "each row is its own point: its log-determinant is its own, one number per row "
                "(N,), not the batch's sum", lambda c: forward(c, per_row=False)),
    ),
)


def softplus(a):
    return np.maximum(a, 0) + np.log1p(np.exp(-abs(a)))


def u_case(rng):
    dims = int(rng.integers(2, 6))
    w = rng.standard_normal(dims) * rng.uniform(0.3, 2)
    u = -w * rng.uniform(0, 3) + rng.standard_normal(dims)  # often against w: w . u below -1
    return {"u": u, "w": w}


def constrain(c, m=lambda a: softplus(a) - 1, norm=lambda w: w @ w):
    u, w = c["u"], c["w"]
    a = w @ u
    return (u + (m(a) - a) * w / norm(w),)


CONSTRAINED = Part(
    name="constrained_u", signature="constrained_u(u, w) -> u_hat", lesson=LESSON,
    terms="m map invertible hyperplane",
    args=("u", "w"), outputs=("u_hat",), make_case=u_case, answer=constrain,
    mistakes=(
        Mistake("softplus without -1", "m(a) = -1 + log(1 + e^a): without the -1, w . u_hat > 0 always, and the map "
                "can never contract along w", lambda c: constrain(c, m=softplus)),
        Mistake("divided by |w|", "moving u along w by an amount d changes w . u by d |w|^2: divide by w . w, the "
                "squared length", lambda c: constrain(c, norm=np.linalg.norm)),
        Mistake("u unchanged", "u_hat must satisfy w . u_hat = m(w . u) > -1, also when w . u is below -1",
                lambda c: (c["u"].copy(),)),
    ),
)


def backward(c, to_params=True, det_t_term=True, identity=True, bias=np.sum):
    z, u, w, b, g, c_ld = c["z"], c["u"], c["w"], c["b"], c["dz_next"], c["dlogdet"]
    t = np.tanh(z @ w + b[0])
    s = 1 - t * t
    det = 1 + s * (w @ u)
    ddet = c_ld / det                        # d log det / d det = 1 / det
    through_wu = (s * ddet).sum() if to_params else 0.0   # d det / d(w . u) = 1 - t^2
    du = t @ g + through_wu * w
    dt = g @ u - (2 * t * (w @ u) * ddet if det_t_term else 0)
    da = dt * s
    dz = (g if identity else 0) + da[:, None] * w
    dw = z.T @ da + through_wu * u
    db = np.atleast_1d(bias(da))
    return dz, du, dw, db


BACKWARD = Part(
    name="planar_backward", signature="planar_backward(z, u, w, b, dz_next, dlogdet) -> (dz, du, dw, db)",
    lesson=LESSON, terms="t N z_next loss gradient map determinant Jacobian hyperplane",
    args=("z", "u", "w", "b", "dz_next", "dlogdet"), outputs=("dz", "du", "dw", "db"), make_case=flow_case,
    answer=backward, batch="z",
    mistakes=(
        Mistake("det's t term missing", "the log-determinant's path through t is missing: the determinant "
                "det = 1 + (1 - t^2) w . u depends on t, which adds -2 t (w . u) dlogdet / det to dL/dt (the loss "
                "reads the log-determinant through u and w as well)", lambda c: backward(c, det_t_term=False)),
        Mistake("no log-determinant path to u and w", "dlogdet reaches u and w too: d log det / d u = (1 - t^2) w / "
                "det and d log det / d w = (1 - t^2) u / det, for every row", lambda c: backward(c, to_params=False)),
        Mistake("no identity", "z_next = z + u t: z reaches z_next directly, so dz starts from dz_next",
                lambda c: backward(c, identity=False)),
    ),
)

PARTS = (FORWARD, CONSTRAINED, BACKWARD)
