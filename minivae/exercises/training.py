"""Exercise 5, training: Adam, SGD with momentum, and the loop over shuffled minibatches that overfits a tiny set.

Update rules are pure functions, as in the paper::

    m <- b1 m + (1 - b1) dw;  v <- b2 v + (1 - b2) dw^2
    w <- w - lr m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - b1^t),  v_hat = v / (1 - b2^t)

with ``t`` counting steps from 1. SGD follows ``minivae.optim.SGD``:
``v <- momentum v + dw; w <- w - lr v``.
"""

import numpy as np

from ..datasets import load_digits
from ..model import VAE
from .checking import Mistake, Part, Wrong, close, norm_error

LESSON = "05_training"


def adam_case(rng):
    """A mid-run state at gradient scale ``s``; ``w`` is on the scale of one step, so no error in the step hides in w."""
    shape = tuple(int(s) for s in rng.integers(1, 7, size=int(rng.integers(1, 3))))
    s, lr = 10.0 ** rng.uniform(-4, 0), 10.0 ** rng.uniform(-4, -1)
    return {"w": lr * rng.standard_normal(shape), "dw": s * rng.standard_normal(shape),
            "m": 0.3 * s * rng.standard_normal(shape), "v": 0.1 * s**2 * rng.random(shape), "t": int(rng.integers(1, 20)),
            "lr": lr, "b1": rng.uniform(0.5, 0.95), "b2": rng.uniform(0.9, 0.9999), "eps": s * 10.0 ** rng.uniform(-3, -1)}


def adam(w, dw, m, v, t, lr, b1, b2, eps, correct=True, eps_inside=False, b1_swapped=False, ascent=False):
    """The textbook Adam step; the switches give the catalogue's wrong versions."""
    m = b1 * dw + (1 - b1) * m if b1_swapped else b1 * m + (1 - b1) * dw
    v = b2 * v + (1 - b2) * dw**2
    m_hat = m / (1 - b1**t) if correct else m
    v_hat = v / (1 - b2**t) if correct else v
    step = lr * m_hat / (np.sqrt(v_hat + eps) if eps_inside else np.sqrt(v_hat) + eps)
    return (w + step if ascent else w - step), m, v


def adam_with(**switches):
    return lambda c: adam(*(c[a] for a in ADAM_ARGS), **switches)


ADAM_ARGS = ("w", "dw", "m", "v", "t", "lr", "b1", "b2", "eps")
ADAM = Part(
    name="adam_step", signature="adam_step(w, dw, m, v, t, lr, b1, b2, eps) -> (w, m, v)", lesson=LESSON,
    terms="loss gradient",
    args=ADAM_ARGS, outputs=("w", "m", "v"), make_case=adam_case, answer=adam_with(),
    extra={"nonfinite": "With t counting from 1, 1 - b1**t is never 0; counting from 0 divides by zero"},
    mistakes=(
        Mistake("no bias correction", "the bias corrections are missing: divide m by 1 - b1**t and v by 1 - b2**t "
                "(the moments start at 0 and are too small early on)", adam_with(correct=False)),
        Mistake("eps inside the square root", "eps is added after the square root: sqrt(v_hat) + eps",
                adam_with(eps_inside=True)),
        Mistake("b1 and 1 - b1 swapped", "m <- b1 m + (1 - b1) dw: the old moment keeps the weight b1",
                adam_with(b1_swapped=True)),
        Mistake("ascent", "it climbs the loss: step against the gradient, w - lr ...", adam_with(ascent=True)),
    ),
)


# ---------------------------------------------------------------- SGD with momentum, minivae's convention
def sgd_case(rng):
    c = adam_case(rng)
    return {"w": c["w"], "dw": c["dw"], "v": c["m"], "lr": c["lr"], "momentum": rng.uniform(0, 0.99)}


def sgd_answer(c):
    v = c["momentum"] * c["v"] + c["dw"]
    return c["w"] - c["lr"] * v, v


SGD = Part(
    name="sgd_momentum_step", signature="sgd_momentum_step(w, dw, v, lr, momentum) -> (w, v)", lesson=LESSON,
    terms="update",
    args=("w", "dw", "v", "lr", "momentum"), outputs=("w", "v"), make_case=sgd_case, answer=sgd_answer,
    mistakes=(
        Mistake("old velocity", "w moves by the new velocity: update v first, then w <- w - lr v",
                lambda c: (c["w"] - c["lr"] * c["v"], sgd_answer(c)[1])),
        Mistake("other convention", "that is the v <- momentum v - lr dw; w <- w + v convention; this exercise (and "
                "minivae.optim.SGD) uses v <- momentum v + dw; w <- w - lr v",
                lambda c: (c["w"] + c["momentum"] * c["v"] - c["lr"] * c["dw"], c["momentum"] * c["v"] - c["lr"] * c["dw"])),
    ),
)


# ---------------------------------------------------------------- the training loop
def tiny_problem(seed, n=8):
    """A small float64 model and ``n`` binarised digits: a set it can overfit."""
    x = (load_digits("train")[0][seed % 1000: seed % 1000 + n] > 0.5).astype(np.float64)
    return VAE(64, hidden_dims=(16,), latent_dim=2, activation="tanh", dtype="float64", seed=seed), x


def reference_train(model, x, epochs, batch_size, lr, update, rng, shuffle="every epoch", t_per_epoch=False):
    """Adam over every parameter on shuffled minibatches, one call of ``loss_and_grads`` a step.

    Each epoch draws ``rng.permutation(len(x))`` and walks it in batches of
    ``batch_size`` (the last one smaller when ``batch_size`` does not divide
    ``len(x)``); ``t`` counts the steps of the whole run from 1. ``shuffle``
    (``"once"``, ``"never"``) and ``t_per_epoch`` give the catalogue's wrong loops.
    """
    state = {name: (np.zeros_like(p), np.zeros_like(p)) for name, p in model.params.items()}
    losses, t, order = [], 0, np.arange(len(x))
    for epoch in range(epochs):
        if shuffle == "every epoch" or (shuffle == "once" and epoch == 0):
            order = rng.permutation(len(x))
        if t_per_epoch:
            t = 0
        for start in range(0, len(x), batch_size):
            t += 1
            loss, grads = model.loss_and_grads(x[order[start:start + batch_size]])
            for name, p in model.params.items():
                m, v = state[name]
                p[...], m[...], v[...] = update(p, grads[name], m, v, t, lr, 0.9, 0.999, 1e-8)
            losses.append(loss)
    return losses


def reference_update(w, dw, m, v, t, lr, b1, b2, eps):
    return adam(w, dw, m, v, t, lr, b1, b2, eps)


LOOP_MISTAKES = (
    (dict(shuffle="never"), "it walks the data in the same order every epoch: shuffle, drawing "
                            "rng.permutation(len(x)) at the start of every epoch"),
    (dict(shuffle="once"), "it shuffles once: draw a new rng.permutation(len(x)) at the start of every epoch"),
    (dict(t_per_epoch=True), "its step count restarts every epoch: t counts the steps of the whole run, from 1, "
                             "so Adam's bias corrections fade once"),
)


def train_trial(fn, rng):
    seed, data_seed = int(rng.integers(2**31)), int(rng.integers(2**31))
    lr, batch_size, epochs = float(rng.uniform(0.003, 0.03)), int(rng.integers(5, 10)), 3
    model, x = tiny_problem(seed, n=24)
    steps = epochs * -(-len(x) // batch_size)  # the last batch of an epoch may be smaller
    start = model.flat_params.copy()
    got = fn(model, x, epochs, batch_size, lr, reference_update, np.random.default_rng(data_seed))
    twin, _ = tiny_problem(seed, n=24)
    want = reference_train(twin, x, epochs, batch_size, lr, reference_update, np.random.default_rng(data_seed))
    if np.array_equal(model.flat_params, start):
        raise Wrong("the model's parameters did not change. model.params are views into one vector: "
                    "write the new values into them (p[...] = new), rather than rebinding the name")
    try:
        got = np.asarray(got, dtype=np.float64)
    except (TypeError, ValueError):
        raise Wrong(f"it should return the list of the {steps} losses; got {type(got).__name__}") from None
    if got.shape != (steps,):
        raise Wrong(f"it should return one loss per step: {epochs} epochs of {len(x)} examples in batches of "
                    f"{batch_size} (the last one smaller) are {steps} steps; got shape {got.shape}")
    if got[-1] > got[0] and want[-1] < want[0]:
        raise Wrong("the loss went up: the update must step against the gradient")
    if not close(got, want):
        for switches, message in LOOP_MISTAKES:
            wrong_model, _ = tiny_problem(seed, n=24)
            wrong = reference_train(wrong_model, x, epochs, batch_size, lr, reference_update,
                                    np.random.default_rng(data_seed), **switches)
            if close(got, wrong):
                raise Wrong(message)
        raise Wrong("its losses differ from a reference loop's (relative error "
                    f"{norm_error(got, want):.2g}): shuffle with rng.permutation(len(x)) each epoch, call "
                    "model.loss_and_grads once a batch, count t from 1 over the whole run, and update every "
                    "parameter with its own m and v")
    if not close(model.flat_params, twin.flat_params):
        raise Wrong("its losses are right but its final parameters are not: is the last update applied?")
    return norm_error(model.flat_params, twin.flat_params)


TRAIN = Part(name="train", signature="train(model, x, epochs, batch_size, lr, update, rng) -> losses",
             lesson=LESSON, trial=train_trial, draws=2, points=2)

PARTS = (ADAM, SGD, TRAIN)
