"""Exercise 11, semi-supervised learning (M2): the bound of an unlabelled example, with the class summed out,
and the gradient that reaches the classifier's logits from labelled and unlabelled examples.

The conventions are :mod:`minivae.semisupervised`': ``log_q`` (N, C) is ``log q(y|x)`` of each example and
class; ``bounds`` (N, C) is ``L(x, y)``, the bound on ``log p(x, y)`` for each class (the conditional VAE's
ELBO plus ``log p(y)``); ``onehot`` (N, C) holds a labelled example's class and a row of zeros for an
unlabelled one. The loss is the sum over the examples of ``-U(x)`` (unlabelled) or ``-L(x, y) - alpha log
q(y|x)`` (labelled).
"""

import numpy as np

from .checking import Mistake, Part

LESSON = "11_semi_supervised"


def case(rng):
    n, c = int(rng.integers(3, 8)), int(rng.integers(2, 6))
    logits = rng.standard_normal((n, c)) * 1.5
    log_q = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    onehot = np.zeros((n, c))
    known = rng.random(n) < 0.5
    known[0], known[-1] = True, False  # both kinds in every case
    onehot[np.flatnonzero(known), rng.integers(0, c, known.sum())] = 1
    return {"log_q": log_q, "bounds": -90 + 5 * rng.standard_normal((n, c)), "onehot": onehot,
            "alpha": float(rng.uniform(0.5, 3))}


def unlabelled(c, entropy=1.0, weights="q"):
    log_q, bounds = c["log_q"], c["bounds"]
    q = np.exp(log_q)
    if weights == "argmax":
        return (bounds[np.arange(len(q)), q.argmax(axis=1)],)
    w = q if weights == "q" else np.full_like(q, 1 / q.shape[1])
    return ((w * bounds).sum(axis=1) - entropy * (q * log_q).sum(axis=1),)


UNLABELLED = Part(
    name="unlabelled_bound", signature="unlabelled_bound(log_q, bounds) -> U", lesson=LESSON,
    terms="x y",
    args=("log_q", "bounds"), outputs=("U",), make_case=case, answer=unlabelled,
    mistakes=(
        Mistake("no entropy", "U(x) = sum_y q(y|x) L(x, y) + H(q(y|x)): the entropy -sum_y q log q is missing",
                lambda c: unlabelled(c, entropy=0.0)),
        Mistake("entropy's sign", "the entropy is H = -sum_y q log q, which is >= 0 and adds to the bound",
                lambda c: unlabelled(c, entropy=-1.0)),
        Mistake("the likeliest class alone", "y is summed over the classes: every class counts with its probability q(y|x), not "
                "only the likeliest", lambda c: unlabelled(c, weights="argmax")),
        Mistake("classes weighted equally", "each class's bound is weighted by q(y|x), not by 1/C",
                lambda c: unlabelled(c, weights="uniform")),
    ),
)


def logits_gradient(c, centred=True, sign=1.0, labelled_rule=True, alpha=True):
    log_q, bounds, onehot = c["log_q"], c["bounds"], c["onehot"]
    q = np.exp(log_q)
    g = -bounds + log_q  # d(-U)/dq_y, less a constant 1 that the softmax cancels
    unl = q * (g - ((q * g).sum(axis=1, keepdims=True) if centred else 0))
    lab = (c["alpha"] if alpha else 1.0) * (q - onehot)
    known = onehot.sum(axis=1, keepdims=True) > 0
    return (sign * np.where(known & labelled_rule, lab, unl),)


LOGITS = Part(
    name="classifier_gradient", signature="classifier_gradient(log_q, bounds, onehot, alpha) -> dlogits",
    lesson=LESSON, terms="x y U loss gradient",
    args=("log_q", "bounds", "onehot", "alpha"), outputs=("dlogits",), make_case=case, answer=logits_gradient,
    mistakes=(
        Mistake("softmax not centred", "through q = softmax(a), da_k = q_k (g_k - sum_y q_y g_y): the softmax's "
                "outputs move together, so each gradient is taken relative to their q-weighted mean",
                lambda c: logits_gradient(c, centred=False)),
        Mistake("sign", "the loss is -U(x): d(-U)/dq_y = -L(x, y) + log q_y + 1", lambda c: logits_gradient(c, sign=-1.0)),
        Mistake("labelled rows as unlabelled", "a labelled example's loss is -L(x, y) - alpha log q(y|x); only the "
                "second term reads the classifier, giving alpha (q - onehot)",
                lambda c: logits_gradient(c, labelled_rule=False)),
        Mistake("alpha missing", "the classification loss carries its weight alpha: alpha (q - onehot)",
                lambda c: logits_gradient(c, alpha=False)),
    ),
)

PARTS = (UNLABELLED, LOGITS)
