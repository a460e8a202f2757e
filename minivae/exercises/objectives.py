"""Exercise 8, the objective's pieces: the Gaussian KL, the importance-weighted bound's weights, free bits,
the conditional model's first layer, and a model trained past a baseline.

The conventions are the library's:

* ``KL(N(mu, diag(exp(logvar))) || N(0, I)) = 1/2 sum_j (mu_j^2 + exp(logvar_j) - logvar_j - 1)``
  (:func:`minivae.losses.kl_per_dimension`);
* the K-sample bound ``log (1/K) sum_k w_k`` and its gradient with respect to
  each ``log w_k``, the normalised weight ``w_k / sum_j w_j``;
* free bits as in :meth:`minivae.VAE.forward_backward`: each latent
  dimension's *batch-mean* KL counts as at least ``free_bits`` nats, and
  passes no gradient while below that floor;
* a conditional layer reads ``[z, one-hot(y)]``, the label after ``z``
  (:meth:`minivae.VAE.decoder_forward`).
"""

import math

import numpy as np

from ..baselines import histogram_log_prob, pixel_histograms
from ..datasets import load_digits
from .checking import Mistake, Part, Wrong

LESSON = "08_objectives"


# ---------------------------------------------------------------- the Gaussian KL, derived
def kl_case(rng):
    n, dims = int(rng.integers(1, 8)), int(rng.integers(2, 7))
    return {"mu": rng.standard_normal((n, dims)) * rng.uniform(0.2, 2), "logvar": rng.standard_normal((n, dims))}


def kl(c, minus_one=True, var=np.exp, logvar_sign=-1, reduce=np.sum):
    mu, lv = c["mu"], c["logvar"]
    return (0.5 * reduce(mu**2 + var(lv) + logvar_sign * lv - (1 if minus_one else 0), axis=1),)


KL = Part(
    name="gaussian_kl", signature="gaussian_kl(mu, logvar) -> kl (N,)", lesson=LESSON,
    terms="sigma KL",
    args=("mu", "logvar"), outputs=("kl",), make_case=kl_case, answer=kl,
    mistakes=(
        Mistake("no -1", "a KL is 0 when q is the prior (mu = 0, logvar = 0); the -1 in each dimension's term makes "
                "it so", lambda c: kl(c, minus_one=False)),
        Mistake("exp(logvar) as the standard deviation", "q's variance is exp(logvar); it used exp(logvar) as the "
                "standard deviation and squared it", lambda c: kl(c, var=lambda lv: np.exp(2 * lv))),
        Mistake("+logvar", "the log-variance enters with a minus sign: -logvar is minus the log of sigma^2, from the "
                "entropy of q", lambda c: kl(c, logvar_sign=+1)),
        Mistake("mean over dimensions", "the KL of independent dimensions is the sum of their KLs, not their mean",
                lambda c: kl(c, reduce=np.mean)),
    ),
)


# ---------------------------------------------------------------- the importance-weighted bound and its weights
def log_w_case(rng):
    n, k = int(rng.integers(1, 6)), int(rng.integers(2, 40))
    offset = float(rng.choice([-1000.0, 0.0, 750.0]))
    return {"log_w": rng.standard_normal((n, k)) * rng.uniform(0.5, 5) + offset}


def shifted(log_w, axis=1):
    return np.exp(log_w - log_w.max(axis=axis, keepdims=True))


def iwae(c, minus_log_k=True, weights="normalised"):
    log_w = c["log_w"]
    k = log_w.shape[1]
    m = log_w.max(axis=1)
    bound = m + np.log(shifted(log_w).sum(axis=1)) - (math.log(k) if minus_log_k else 0.0)
    w = {"normalised": lambda: shifted(log_w) / shifted(log_w).sum(axis=1, keepdims=True),
         "unnormalised": lambda: shifted(log_w),
         "over examples": lambda: shifted(log_w, 0) / shifted(log_w, 0).sum(axis=0, keepdims=True),
         "equal": lambda: np.full_like(log_w, 1 / k)}[weights]()
    return bound, w


IWAE = Part(
    name="iwae_bound", signature="iwae_bound(log_w) -> (iw_bound, w_norm)", lesson=LESSON,
    terms="gradient samples",
    args=("log_w",), outputs=("iw_bound", "w_norm"), make_case=log_w_case, answer=iwae,
    extra={"nonfinite": "exp of a log-weight near -1000 or +750 underflows or overflows: shift each row by its "
                        "maximum before exponentiating"},
    mistakes=(
        Mistake("missing log K", "the bound is the log of the *average* weight: subtract log K from the log-sum-exp",
                lambda c: iwae(c, minus_log_k=False)),
        Mistake("ELBO instead", "that is the mean of the log-weights, the ELBO; the importance-weighted bound is "
                "the log of the mean weight", lambda c: (c["log_w"].mean(axis=1), iwae(c)[1])),
        Mistake("unnormalised", "the gradient of a log of a sum is each term over the sum: divide the shifted "
                "weights by their sum over the K samples", lambda c: iwae(c, weights="unnormalised")),
        Mistake("over examples", "normalise each example's K weights (along axis 1), not each sample's weights "
                "across the examples", lambda c: iwae(c, weights="over examples")),
        Mistake("equal", "equal weights 1/K are the gradient of the mean log-weight, the ELBO; the bound weights "
                "each sample by how well it explains its example, w_k over the sum of all K", lambda c: iwae(c, weights="equal")),
    ),
)


# ---------------------------------------------------------------- beta and free bits
def free_bits_case(rng):
    """KLs per example and dimension; dimension 0's batch mean lies below the floor with one entry above it,
    dimension 1's above it with one entry below, so a floor taken per example differs from the right one."""
    n, dims = int(rng.integers(3, 9)), int(rng.integers(2, 6))
    floor = float(rng.uniform(0.2, 1.0))
    values = rng.uniform(0.05, 2.0, (n, dims)) * floor * 1.5
    values[:, 0] = [1.4 * floor] + [(0.6 * n - 1.4) * floor / (n - 1)] * (n - 1)  # mean 0.6 floor
    values[:, 1] = [0.5 * floor] + [(1.5 * n - 0.5) * floor / (n - 1)] * (n - 1)  # mean 1.5 floor
    values[:, 0], values[:, 1] = rng.permutation(values[:, 0]), rng.permutation(values[:, 1])
    return {"kl": values, "beta": float(rng.uniform(0.5, 4.0)), "free_bits": floor}


def free_bits(c, per_example=False, gradient_below=False, beta_in_gradient=True):
    kl, beta, floor = c["kl"], c["beta"], c["free_bits"]
    n = kl.shape[0]
    if per_example:
        term = beta * np.maximum(kl, floor).sum(axis=1).mean()
        above = kl > floor
    else:
        term = beta * np.maximum(kl.mean(axis=0), floor).sum()
        above = np.broadcast_to(kl.mean(axis=0) > floor, kl.shape)
    if gradient_below:
        above = np.ones_like(kl, dtype=bool)
    return np.float64(term), (beta if beta_in_gradient else 1.0) / n * above


FREE_BITS = Part(
    name="free_bits_kl", signature="free_bits_kl(kl, beta, free_bits) -> (penalty, dkl)", lesson=LESSON,
    terms="floor KL gradient N loss",
    args=("kl", "beta", "free_bits"), outputs=("penalty", "dkl"), make_case=free_bits_case, answer=free_bits,
    batch="kl", batch_mean=True,
    mistakes=(
        Mistake("floor per example", "the floor applies to each dimension's batch-mean KL, max(mean over the batch, "
                "free_bits), not to each example's KL", lambda c: free_bits(c, per_example=True)),
        Mistake("gradient below the floor", "below the floor the term is the constant free_bits: those dimensions "
                "get no gradient", lambda c: free_bits(c, gradient_below=True)),
        Mistake("beta left out of the gradient", "the term is beta times the floored KL, so its gradient carries "
                "beta too", lambda c: free_bits(c, beta_in_gradient=False)),
    ),
)


# ---------------------------------------------------------------- the conditional model's first layer
def conditional_case(rng):
    n, dims, classes, hidden = (int(rng.integers(2, 7)), int(rng.integers(1, 5)), int(rng.integers(2, 11)),
                                int(rng.integers(2, 7)))
    return {"z": rng.standard_normal((n, dims)), "y": rng.integers(0, classes, n),
            "W": rng.standard_normal((dims + classes, hidden)), "b": rng.standard_normal(hidden),
            "da": rng.standard_normal((n, hidden))}


def conditional(c, label_first=False, dz_columns="first"):
    z, y, W, b, da = c["z"], c["y"], c["W"], c["b"], c["da"]
    dims, classes = z.shape[1], W.shape[0] - z.shape[1]
    onehot = np.eye(classes)[y]
    h = np.hstack([onehot, z] if label_first else [z, onehot])
    dh = da @ W.T
    dz = dh[:, classes:] if label_first else (dh[:, :dims] if dz_columns == "first" else dh[:, -dims:])
    return h @ W + b, dz


CONDITIONAL = Part(
    name="conditional_layer", signature="conditional_layer(z, y, W, b, da) -> (out, dz)", lesson=LESSON,
    terms="gradient N",
    args=("z", "y", "W", "b", "da"), outputs=("out", "dz"), make_case=conditional_case, answer=conditional,
    batch="z",
    mistakes=(
        Mistake("dz from the label's columns", "dz is the first L columns of da @ W.T, those that multiply z; the "
                "last C belong to the label, which needs no gradient", lambda c: conditional(c, dz_columns="last")),
        Mistake("label first", "the layer reads [z, one-hot(y)], the label after z: W's first L rows multiply z and "
                "its last C rows the label", lambda c: conditional(c, label_first=True)),
    ),
)


# ---------------------------------------------------------------- a graded experiment: past the histograms
def past_histograms_trial(fn, rng):
    """Train the learner's model once and score it on the test digits against per-pixel histograms, per digit."""
    x_train, _ = load_digits("train")
    x_test, _ = load_digits("test")
    model = fn(x_train.copy())
    if not (hasattr(model, "elbo") and getattr(model, "input_dim", None) == 64):
        raise Wrong(f"it should return a trained minivae.VAE of the 64-pixel digits; got {type(model).__name__}")
    if getattr(model, "n_classes", None):
        raise Wrong("it should return a model of p(x), without labels: a conditional model bounds log p(x|y)")
    likelihood = getattr(model, "likelihood_", None)
    if getattr(likelihood, "levels", None) != 17:
        raise Wrong("its likelihood must be a probability of the 17 grey levels (a pmf over the counts 0 to 16), so "
                    "that its ELBO bounds a log-probability of these digits, as the histograms' figure is; got the "
                    f"{getattr(likelihood, 'title', type(likelihood).__name__)} likelihood")
    counts = np.rint(x_test * 16).astype(np.int64)
    hist = histogram_log_prob(pixel_histograms(np.rint(x_train * 16).astype(np.int64), 17), counts)
    try:
        elbo = np.mean([np.asarray(model.elbo(x_test), dtype=np.float64) for _ in range(5)], axis=0)
    except ValueError as e:
        raise Wrong(f"its model cannot score the digits as they are ({e})") from None
    d = elbo - hist
    gain, se = float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d)))
    if not np.isfinite(gain) or gain - 4 * se <= 0:
        raise Wrong(f"its test ELBO is {elbo.mean():.2f} nats per digit and the per-pixel histograms' log p(x) is "
                    f"{hist.mean():.2f}: the difference, {gain:+.2f} ± {se:.2f} nats, must be above 0 by more than four "
                    "standard errors. Notebook 5 says why a binomial of these pixels loses, and which likelihoods do not")
    print(f"test ELBO {elbo.mean():.2f} nats per digit, the histograms' log p(x) {hist.mean():.2f}: "
          f"ahead by {gain:+.2f} ± {se:.2f} nats, more than four standard errors")
    return 0.0


PAST_HISTOGRAMS = Part(name="past_the_histograms", signature="past_the_histograms(x_train) -> model",
                       lesson=LESSON, trial=past_histograms_trial, draws=1, points=2)

PARTS = (KL, IWAE, FREE_BITS, CONDITIONAL, PAST_HISTOGRAMS)
