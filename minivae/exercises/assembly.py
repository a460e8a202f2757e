"""Exercise 4, the whole VAE assembled from its layers: two heads on one hidden layer, forward and backward.

The model is minivae's ``VAE(D, hidden_dims=(H,), latent_dim=K, activation="tanh")``
with Bernoulli pixels, and its parameters carry the library's names::

    h = tanh(x W0 + b0)                      encoder.0
    mu = h Wmu + bmu, logvar = h Wlv + blv   encoder.mu, encoder.logvar
    z = mu + exp(logvar / 2) eps
    g = tanh(z V0 + c0)                      decoder.0
    logits = g Vout + cout                   decoder.out
    loss = mean_n [ sum_d (softplus(logits) - x logits) + KL(q(z|x_n) || N(0, I)) ]

:func:`reference` writes it out once more, independently of ``minivae.model``;
``tests/test_exercises.py`` proves it equal to ``VAE.loss_and_grads`` and to
finite differences. Its switches build the catalogue's wrong answers.
"""

import numpy as np

from .checking import Mistake, Part

LESSON = "04_vae_by_hand"
NAMES = ("encoder.0.W", "encoder.0.b", "encoder.mu.W", "encoder.mu.b", "encoder.logvar.W", "encoder.logvar.b",
         "decoder.0.W", "decoder.0.b", "decoder.out.W", "decoder.out.b")


FROM_LOSS = ("decoder.out.W", "decoder.out.b", "decoder.0.W", "decoder.0.b", "encoder.mu.W", "encoder.mu.b",
             "encoder.logvar.W", "encoder.logvar.b", "encoder.0.W", "encoder.0.b")  # the order backprop computes them


def shapes(d, h, k):
    return {"encoder.0.W": (d, h), "encoder.0.b": (h,), "encoder.mu.W": (h, k), "encoder.mu.b": (k,),
            "encoder.logvar.W": (h, k), "encoder.logvar.b": (k,), "decoder.0.W": (k, h), "decoder.0.b": (h,),
            "decoder.out.W": (h, d), "decoder.out.b": (d,)}


def vae_case(rng):
    n, d, h, k = (int(v) for v in rng.choice(np.arange(2, 10), size=4, replace=False))
    params = {name: rng.standard_normal(shape) * (0.5 if name.endswith(".W") else 0.1)
              for name, shape in shapes(d, h, k).items()}
    x = (rng.random((n, d)) < 0.4).astype(np.float64)
    x[np.arange(n), rng.integers(d, size=n)] = 1  # a pixel on in every image: no gradient is exactly 0
    return {"params": params, "x": x, "eps": rng.standard_normal((n, k))}


SITES = ("dlogits", "decoder tanh'", "dz", "dmu", "dlogvar", "encoder tanh'")  # the backward pass's inner signals


def reference(params, x, eps, kl=True, both_heads=True, sigma=lambda logvar: np.exp(logvar / 2), mean=True,
              kl_logvar_sign=1, spoil=None):
    """``(loss, grads)`` of the model above, every derivative written out (switches: see the module docstring).

    ``spoil(site, value)``, when given, replaces each inner signal of the
    backward pass named in ``SITES`` as it is computed, so that a wrong
    derivative there flows into every gradient computed from it (exercise 7).
    """
    spoil = spoil or (lambda site, value: value)
    p = params
    n = x.shape[0]
    scale = 1.0 / n if mean else 1.0  # the loss is a batch mean: 1/N on every example's gradient
    h = np.tanh(x @ p["encoder.0.W"] + p["encoder.0.b"])  # (N, H)
    mu = h @ p["encoder.mu.W"] + p["encoder.mu.b"]  # (N, K)
    logvar = h @ p["encoder.logvar.W"] + p["encoder.logvar.b"]  # (N, K)
    s = sigma(logvar)
    z = mu + s * eps  # (N, K)
    g = np.tanh(z @ p["decoder.0.W"] + p["decoder.0.b"])  # (N, H)
    logits = g @ p["decoder.out.W"] + p["decoder.out.b"]  # (N, D)
    rec = (np.logaddexp(0, logits) - x * logits).sum(axis=1)  # (N,) -log p(x|z)
    kl_n = 0.5 * (mu**2 + np.exp(logvar) - logvar - 1).sum(axis=1)  # (N,)
    loss = (rec + kl_n * kl).sum() * scale

    grads = {}
    dlogits = spoil("dlogits", (np.exp(-np.logaddexp(0, -logits)) - x) * scale)  # sigmoid(l) - x, per example / N
    grads["decoder.out.W"], grads["decoder.out.b"] = g.T @ dlogits, dlogits.sum(axis=0)
    da = (dlogits @ p["decoder.out.W"].T) * spoil("decoder tanh'", 1 - g**2)  # tanh' = 1 - g^2
    grads["decoder.0.W"], grads["decoder.0.b"] = z.T @ da, da.sum(axis=0)
    dz = spoil("dz", da @ p["decoder.0.W"].T)  # (N, K)
    dmu = dz * 1  # dz/dmu = 1
    dlogvar = dz * eps * s / 2  # dz/dsigma = eps, dsigma/dlogvar = sigma / 2
    if kl:  # the KL depends on mu and logvar directly
        dmu = dmu + mu * scale
        dlogvar = dlogvar + kl_logvar_sign * (np.exp(logvar) - 1) / 2 * scale
    dmu, dlogvar = spoil("dmu", dmu), spoil("dlogvar", dlogvar)
    grads["encoder.mu.W"], grads["encoder.mu.b"] = h.T @ dmu, dmu.sum(axis=0)
    grads["encoder.logvar.W"], grads["encoder.logvar.b"] = h.T @ dlogvar, dlogvar.sum(axis=0)
    dh = dmu @ p["encoder.mu.W"].T  # both heads read h: their gradients add
    if both_heads:
        dh = dh + dlogvar @ p["encoder.logvar.W"].T
    da = dh * spoil("encoder tanh'", 1 - h**2)
    grads["encoder.0.W"], grads["encoder.0.b"] = x.T @ da, da.sum(axis=0)
    return loss, grads


def as_tuple(result):
    return tuple(result[1][name] for name in NAMES)


def wrong(**switches):
    return lambda c: as_tuple(reference(c["params"], c["x"], c["eps"], **switches))


def wrong_loss(**switches):
    return lambda c: (reference(c["params"], c["x"], c["eps"], **switches)[0],)


# ---------------------------------------------------------------- two heads reading one hidden layer
def heads_case(rng):
    n, h, k = (int(v) for v in rng.choice(np.arange(3, 10), size=3, replace=False))  # N > 2: 1/N is not 1/2
    return {"dmu": rng.standard_normal((n, k)), "dlogvar": rng.standard_normal((n, k)), "h": rng.standard_normal((n, h)),
            "W_mu": rng.standard_normal((h, k)), "W_logvar": rng.standard_normal((h, k))}


def heads_answer(c):
    return c["dmu"] @ c["W_mu"].T + c["dlogvar"] @ c["W_logvar"].T, c["h"].T @ c["dmu"], c["h"].T @ c["dlogvar"]


HEADS = Part(
    name="heads_backward", signature="heads_backward(dmu, dlogvar, h, W_mu, W_logvar) -> (dh, dW_mu, dW_logvar)",
    terms="N gradient",
    lesson=LESSON, args=("dmu", "dlogvar", "h", "W_mu", "W_logvar"), outputs=("dh", "dW_mu", "dW_logvar"),
    make_case=heads_case, answer=heads_answer, batch="h",
    mistakes=(
        Mistake("one head only", "h feeds both heads, so dh is the sum of both heads' contributions; one is missing",
                lambda c: (c["dmu"] @ c["W_mu"].T, *heads_answer(c)[1:])),
        Mistake("heads averaged", "the two heads' contributions to dh add; they are not averaged",
                lambda c: (heads_answer(c)[0] / 2, *heads_answer(c)[1:])),
    ),
)

# ---------------------------------------------------------------- the loss, and every gradient
LOSS = Part(
    name="vae_loss", signature="vae_loss(params, x, eps) -> loss", lesson=LESSON,
    terms="z sigma KL N logvar mu",
    args=("params", "x", "eps"), outputs=("loss",), make_case=vae_case, answer=wrong_loss(), batch="x", batch_mean=True,
    mistakes=(
        Mistake("exp(logvar) as the standard deviation", "z uses exp(logvar) as sigma; exp(logvar) is the variance "
                "sigma^2, so sigma = exp(logvar / 2)", wrong_loss(sigma=np.exp)),
        Mistake("no KL", "the KL term is missing: the loss is reconstruction plus KL", wrong_loss(kl=False)),
    ),
)

GRADS = Part(
    name="vae_backward", signature="vae_backward(params, x, eps) -> {name: gradient}", lesson=LESSON,
    terms="KL N mu logvar dmu dlogvar z h dh sigma loss",
    args=("params", "x", "eps"), outputs=NAMES, make_case=vae_case, answer=wrong(), batch="x", batch_mean=True,
    from_loss=FROM_LOSS,
    mistakes=(
        Mistake("KL's direct terms missing", "the KL's direct gradients are missing: dmu gets + mu / N and dlogvar "
                "gets + (exp(logvar) - 1) / (2N) besides what flows back through z", wrong(kl=False)),
        Mistake("one head only", "h feeds both the mu and the logvar head, so dh adds both heads' contributions",
                wrong(both_heads=False)),
        Mistake("KL's dlogvar sign", "the KL's direct term in dlogvar has the wrong sign: d/dlogvar of "
                "(exp(logvar) - logvar - 1) / 2 is + (exp(logvar) - 1) / 2, per example / N", wrong(kl_logvar_sign=-1)),
    ),
)

PARTS = (HEADS, LOSS, GRADS)
