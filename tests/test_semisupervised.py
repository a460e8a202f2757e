"""The M2 semi-supervised model: every gradient against finite differences with labels known and missing, its
log p(x) against one integrated over a grid and summed over the classes, its bounds below it, its labels, and
the label-only baseline it is measured against."""

import math

import numpy as np
import pytest

import minivae
from minivae import VAE, to_numpy
from minivae.baselines import labelled_folds, logistic_regression, predict
from minivae.semisupervised import SemiSupervisedVAE

from gradients import LIKELIHOOD_CONFIGS, LIKELIHOOD_IDS, checked_gradients, data_for



def tiny(backend="numpy", seed=3, **kwargs):
    options = dict(n_classes=3, alpha=0.7, hidden_dims=(5,), latent_dim=2, activation="tanh", dtype="float64",
                   backend=backend, seed=seed)
    return SemiSupervisedVAE(6, **{**options, **kwargs})


@pytest.mark.parametrize("config", LIKELIHOOD_CONFIGS, ids=LIKELIHOOD_IDS)
def test_every_gradient_matches_finite_differences(config, backend, rng):
    model = tiny(backend, beta=0.8, **config)
    report = checked_gradients(model, data_for(config, rng, 5), rng.standard_normal((5, 2)), y=[0, -1, 2, -1, 1])
    assert set(report.errors) == set(model.params) and any(name.startswith("classifier.") for name in report.errors)
    assert report.max_error < 1e-7, str(report)


def test_all_labels_missing_or_all_known(rng):
    """With every label missing only the unlabelled bound trains the classifier; with every label known and
    alpha = 0 the classifier gets no gradient at all (the bound L(x, y) does not read it)."""
    x = data_for(LIKELIHOOD_CONFIGS[0], rng, 5)
    eps = rng.standard_normal((5, 2))
    model = tiny(alpha=0.0)
    report = checked_gradients(model, x, eps)  # y=None: all missing
    assert report.max_error < 1e-7, str(report)
    _, grads = model.loss_and_grads(x, eps, y=[0, 1, 2, 0, 1])
    assert all(not np.any(g) for name, g in grads.items() if name.startswith("classifier."))


def exact_log_p(model, x, y=None, edge=8.0, points=401):
    """``log p(x)`` (or ``log p(x, y)``) of one row by summing ``p(y) p(z) p(x|y, z)`` over the classes and a grid."""
    grid = np.linspace(-edge, edge, points)
    z = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2)
    cell = (grid[1] - grid[0]) ** 2
    classes = range(model.n_classes) if y is None else [y]
    terms = []
    for c in classes:
        onehot = np.zeros((len(z), model.n_classes))
        onehot[:, c] = 1
        out, dec_logvar = model.decoder_forward(z, onehot)
        log_px = -model.nll(np.repeat(x, len(z), axis=0), out, dec_logvar)[0]
        terms.append(log_px - 0.5 * (z * z).sum(axis=1) - math.log(2 * math.pi) - math.log(model.n_classes))
    joint = np.concatenate(terms)
    return float(np.logaddexp.reduce(joint) + math.log(cell))


@pytest.mark.parametrize("label", [None, 1])
def test_log_likelihood_and_the_bounds_against_the_exact_marginal(label, rng):
    model = tiny(likelihood="bernoulli", seed=5)
    x = data_for(LIKELIHOOD_CONFIGS[0], rng, 1)
    exact = exact_log_p(model, x, label)
    y = None if label is None else [label]
    estimates = np.array([float(model.log_likelihood(x, n_samples=200, y=y)[0]) for _ in range(40)])
    mean, se = estimates.mean(), estimates.std(ddof=1) / math.sqrt(len(estimates))
    assert mean <= exact + 4 * se  # a lower bound in expectation ...
    assert exact - mean < 0.05  # ... and a tight one with 200 samples of a 2-dimensional latent
    bounds = np.array([float(model.elbo(x, y=y)[0]) for _ in range(400)])
    assert bounds.mean() < exact - 4 * bounds.std(ddof=1) / math.sqrt(len(bounds))  # the bound lies below


def test_the_unlabelled_bound_sums_the_labelled_ones_with_the_classifiers_entropy(rng):
    """``U(x) = sum_y q(y|x) L(x, y) + H(q(y|x))``, each ``L(x, y)`` the bound with that label and the same noise."""
    model = tiny(likelihood="bernoulli")
    x, eps = data_for(LIKELIHOOD_CONFIGS[0], rng, 4), rng.standard_normal((4, 2))
    q = to_numpy(model.classify(x))
    labelled = np.stack([to_numpy(model.elbo(x, eps=eps, y=np.full(4, c))) for c in range(3)], axis=1)
    expected = (q * labelled).sum(axis=1) - (q * np.log(q)).sum(axis=1)
    np.testing.assert_allclose(to_numpy(model.elbo(x, eps=eps)), expected, rtol=1e-12)


def test_missing_labels_and_known_ones_each_have_their_place(rng):
    model = tiny(likelihood="bernoulli")
    x = data_for(LIKELIHOOD_CONFIGS[0], rng, 4)
    onehot = to_numpy(model.one_hot([2, -1, 0, -1], 4))
    assert onehot.tolist() == [[0, 0, 1], [0, 0, 0], [1, 0, 0], [0, 0, 0]]
    assert not np.any(to_numpy(model.one_hot(None, 3)))
    for call in (lambda: model.encode(x, y=[0, -1, 1, 2]), lambda: model.encode(x), lambda: model.sample(3, y=-1),
                 lambda: model.decode(np.zeros((2, 2)), y=[1, -1])):
        with pytest.raises(ValueError, match="every label"):
            call()
    with pytest.raises(ValueError, match="0..2"):
        model.one_hot([3, -1, 0, 1], 4)
    probs = to_numpy(model.classify(x))
    assert probs.shape == (4, 3) and np.allclose(probs.sum(axis=1), 1)
    assert model.sample(3, y=1).shape == (3, 6)


def test_a_semi_supervised_model_refuses_what_it_cannot_be():
    with pytest.raises(ValueError, match="needs n_classes"):
        SemiSupervisedVAE(6)
    with pytest.raises(ValueError, match="alpha"):
        tiny(alpha=-1)
    model = tiny(likelihood="bernoulli")
    for options in (dict(objective="iwae", n_samples=2), dict(free_bits=0.5)):
        with pytest.raises(ValueError, match="ELBO alone"):
            model.fit(np.ones((4, 6)), epochs=1, progress=False, **options)


def test_a_checkpoint_comes_back_as_the_same_model(tmp_path, rng):
    model = tiny(likelihood="bernoulli")
    x = data_for(LIKELIHOOD_CONFIGS[0], rng, 20)
    model.fit(x, epochs=2, batch_size=10, y=[0, -1, 1, -1, 2] * 4, progress=False)
    model.save(tmp_path / "m2.npz")
    back = VAE.load(tmp_path / "m2.npz")
    assert type(back) is SemiSupervisedVAE and back.get_config() == model.get_config()
    np.testing.assert_array_equal(to_numpy(back.classify(x)), to_numpy(model.classify(x)))
    config = model.get_config()
    config.pop("seed")
    built = minivae.families.build(config, seed=1)
    assert type(built) is SemiSupervisedVAE and built.alpha == 0.7


def test_training_with_a_few_labels_teaches_the_classifier(rng):
    """Two well-separated kinds of row, two labels of each among 200: q(y|x) learns to tell them apart (chance is
    1/2; 0.8 is more than 8 standard errors of 200 guesses above it)."""
    kind = np.arange(200) % 2
    x = (rng.random((200, 6)) < np.where(kind[:, None] == 1, 0.9, 0.1)).astype(float)
    y = np.full(200, -1)
    y[:4] = kind[:4]
    model = tiny(n_classes=2, likelihood="bernoulli", seed=0).fit(x, epochs=20, batch_size=20, lr=1e-2, y=y,
                                                                  progress=False)
    right = np.argmax(to_numpy(model.classify(x)), axis=1) == kind
    assert right.mean() > 0.8


def test_logistic_regression_fits_separable_classes_and_its_folds_cover_every_example(rng):
    x = np.concatenate([rng.normal(-2, 1, (30, 2)), rng.normal(2, 1, (30, 2))])
    y = np.repeat([0, 1], 30)
    weights = logistic_regression(x, y, 2)
    assert np.mean(predict(weights, x) == y) > 0.95
    # the optimum's gradient is zero: the loss's derivative by finite differences vanishes at the answer
    def loss(w, l2=0.1):
        logits = np.hstack([x, np.ones((60, 1))]) @ w
        return (np.logaddexp.reduce(logits, axis=1) - logits[np.arange(60), y]).mean() + 0.5 * l2 * (w[:-1] ** 2).sum()
    w = logistic_regression(x, y, 2, l2=0.1, steps=3000)  # run long, so that the answer is the optimum
    step = np.zeros_like(w)
    step[0, 0] = 1e-5
    assert abs(loss(w + step) - loss(w - step)) / 2e-5 < 1e-6
    folds = labelled_folds(y)
    held = np.sort(np.concatenate([h for _, h in folds]))
    assert np.array_equal(held, np.arange(60)) and all(len(set(f) & set(h)) == 0 for f, h in folds)
    with pytest.raises(ValueError, match="0..1"):
        logistic_regression(x, y + 1, 2)
