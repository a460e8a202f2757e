"""The exercise checker: right answers always pass, every known mistake fails with its own message.

The right answers the checker compares with are proved here independently:
gradients against float64 finite differences, values against the library or
against a property (a probability sums to 1, an importance weight under the
exact posterior is exactly p(x)). The learner's side is played by the
solution notebooks' own functions.
"""

import math
import re
import statistics

import nbformat
import numpy as np
import pytest

from minivae import VAE, losses
from minivae.exercises import FROM_LOSS, PARTS, ExerciseFailed, PlantedBugModel, check, norm_error
from minivae.exercises.assembly import reference
from minivae.exercises.checking import check as check_part
from minivae.exercises.checking import factor_message, stream
from minivae.exercises.training import adam, reference_train, reference_update, tiny_problem
from minivae.gradcheck import numerical_gradient
from minivae.optim import SGD, Adam

from exercise_notebooks import SOLUTIONS, solved_functions

SOLVED = solved_functions()
ARRAY_PARTS = [name for name, part in PARTS.items() if part.trial is None]


def case_of(name, seed=0):
    return PARTS[name].make_case(stream(name, seed))


def answer(name, case):
    return PARTS[name].answer(case)


# ---------------------------------------------------------------- the right answers are right
def fd_targets(name, c):
    """``(output index, scalar f, array it is differentiated with respect to)`` for each gradient part."""
    if name == "dense_backward":
        b = np.zeros(c["dy"].shape[1])
        L = lambda: ((c["x"] @ c["W"] + b) * c["dy"]).sum()
        return [(0, L, c["x"]), (1, L, c["W"]), (2, L, b)]
    if name == "tanh_backward":
        x = np.arctanh(c["y"])
        return [(0, lambda: (np.tanh(x) * c["dy"]).sum(), x)]
    if name == "sample_backward":
        mu = np.zeros_like(c["logvar"])
        L = lambda: ((mu + np.exp(c["logvar"] / 2) * c["eps"]) * c["dz"]).sum()
        return [(0, L, mu), (1, L, c["logvar"])]
    if name == "bce_backward":
        return [(0, lambda: (np.logaddexp(0, c["logits"]) - c["x"] * c["logits"]).sum(), c["logits"])]
    if name == "kl_backward":
        L = lambda: 0.5 * (c["mu"] ** 2 + np.exp(c["logvar"]) - c["logvar"] - 1).sum()
        return [(0, L, c["mu"]), (1, L, c["logvar"])]
    if name == "pathwise_gradient":
        L = lambda: c["f"](c["mu"] + np.exp(c["logvar"] / 2) * c["eps"]).mean(axis=0).sum()
        return [(0, L, c["mu"]), (1, L, c["logvar"])]
    if name == "binomial_backward":
        return [(0, lambda: -answer("binomial_log_prob", c)[0].sum(), c["logits"])]
    if name == "gaussian_backward":
        L = lambda: -answer("gaussian_log_prob", c)[0].sum()
        return [(0, L, c["mean"]), (1, L, c["logvar"])]
    if name == "heads_backward":
        L = lambda: (c["dmu"] * (c["h"] @ c["W_mu"])).sum() + (c["dlogvar"] * (c["h"] @ c["W_logvar"])).sum()
        return [(0, L, c["h"]), (1, L, c["W_mu"]), (2, L, c["W_logvar"])]
    if name == "vae_backward":
        L = lambda: reference(c["params"], c["x"], c["eps"])[0]
        return [(i, L, c["params"][p]) for i, p in enumerate(PARTS[name].outputs)]
    if name == "iwae_bound":  # d L_K / d log w_k; a constant shift of the rows keeps the rounding of f small
        shift = c["log_w"].max(axis=1, keepdims=True).copy()
        return [(1, lambda: np.logaddexp.reduce(c["log_w"] - shift, axis=1).sum(), c["log_w"])]
    if name == "free_bits_kl":  # no entry of the case sits on the floor, where the term has a kink
        L = lambda: c["beta"] * np.maximum(c["kl"].mean(axis=0), c["free_bits"]).sum()
        return [(1, L, c["kl"])]
    if name == "planar_backward":  # the loss reads both outputs of the map: z_next . dz_next + logdet . dlogdet
        L = lambda: ((answer("planar_forward", c)[0] * c["dz_next"]).sum()
                     + (answer("planar_forward", c)[1] * c["dlogdet"]).sum())
        return [(0, L, c["z"]), (1, L, c["u"]), (2, L, c["w"]), (3, L, c["b"])]
    if name == "mixture_backward":  # the loss reads log p(z) of each row with the weight dlog_p
        L = lambda: (answer("mixture_log_density", c)[0] * c["dlog_p"]).sum()
        return [(0, L, c["z"]), (1, L, c["means"]), (2, L, c["logvars"]), (3, L, c["log_weights"])]
    if name == "conditional_layer":
        classes = c["W"].shape[0] - c["z"].shape[1]
        L = lambda: ((np.hstack([c["z"], np.eye(classes)[c["y"]]]) @ c["W"] + c["b"]) * c["da"]).sum()
        return [(1, L, c["z"])]
    return []


GRADIENT_PARTS = [name for name in ARRAY_PARTS if fd_targets(name, case_of(name))]


def test_every_gradient_part_is_proved_by_finite_differences():
    assert set(GRADIENT_PARTS) == {"dense_backward", "tanh_backward", "sample_backward", "bce_backward",
                                   "kl_backward", "pathwise_gradient", "binomial_backward", "gaussian_backward",
                                   "heads_backward", "vae_backward", "iwae_bound", "free_bits_kl",
                                   "conditional_layer", "planar_backward", "mixture_backward"}


@pytest.mark.parametrize("name", GRADIENT_PARTS)
def test_the_right_gradient_equals_finite_differences(name):
    for seed in range(10):
        c = case_of(name, seed)
        right = answer(name, c)
        for i, f, wrt in fd_targets(name, c):
            assert norm_error(right[i], numerical_gradient(f, wrt, h=1e-4, order=4)) < 1e-8, (name, seed, i)


def test_the_vae_written_out_equals_the_library_model():
    for seed in range(5):
        c = case_of("vae_backward", seed)
        n, d = c["x"].shape
        h, k = c["params"]["encoder.0.W"].shape[1], c["eps"].shape[1]
        model = VAE(d, hidden_dims=(h,), latent_dim=k, activation="tanh", dtype="float64", seed=0)
        for name, value in c["params"].items():
            model.params[name][...] = value
        loss, grads = model.loss_and_grads(c["x"], c["eps"])
        mine_loss, mine = reference(c["params"], c["x"], c["eps"])
        assert mine_loss == pytest.approx(loss, rel=1e-12)
        for name in grads:
            assert norm_error(mine[name], grads[name]) < 1e-12


def test_the_right_values_equal_the_library_and_are_probabilities():
    for seed in range(10):
        c = case_of("bernoulli_log_prob", seed)
        np.testing.assert_allclose(answer("bernoulli_log_prob", c)[0], -losses.bernoulli_nll(c["logits"], c["x"])[0],
                                   rtol=1e-12)
        c = case_of("binomial_log_prob", seed)
        lib = -losses.binomial_nll(c["logits"], c["k"] / c["n"], c["n"])[0]
        np.testing.assert_allclose(answer("binomial_log_prob", c)[0], lib, rtol=1e-10)
        c = case_of("gaussian_log_prob", seed)
        np.testing.assert_allclose(answer("gaussian_log_prob", c)[0],
                                   -losses.gaussian_nll_learned(c["x"], c["mean"], c["logvar"])[0], rtol=1e-12)
    # a binomial pixel's probabilities over k = 0..n sum to 1
    for n in (1, 7, 16):
        ks = np.arange(n + 1, dtype=np.float64)[:, None]
        c = {"logits": np.full_like(ks, 0.7), "k": ks, "n": n}
        assert np.exp(answer("binomial_log_prob", c)[0]).sum() == pytest.approx(1, abs=1e-12)


def test_the_standard_error_is_the_textbook_one():
    for seed in range(10):
        c = case_of("standard_error", seed)
        want = [statistics.stdev(col) / math.sqrt(len(col)) for col in c["samples"].T.tolist()]
        np.testing.assert_allclose(answer("standard_error", c)[0], want, rtol=1e-12)


def test_the_sample_has_the_variance_exp_logvar():
    rng = np.random.default_rng(0)
    mu, logvar = np.array([0.5, -1.0]), np.array([1.2, -0.7])
    z = answer("sample_z", {"mu": mu, "logvar": logvar, "eps": rng.standard_normal((200_000, 2))})[0]
    sq = (z - mu) ** 2
    se = sq.std(axis=0, ddof=1) / math.sqrt(len(sq))
    assert (np.abs(sq.mean(axis=0) - np.exp(logvar)) < 4 * se).all()


def test_the_score_function_estimator_is_unbiased():
    # f(z) = z^2: E f = mu^2 + sigma^2, so d/dmu = 2 mu and d/dlogvar = sigma^2
    rng = np.random.default_rng(1)
    mu, logvar = np.array([0.8, -0.3]), np.array([-0.5, 0.4])
    eps = rng.standard_normal((400_000, 2))
    per_sample = [answer("score_function_gradient", {"f": np.square, "mu": mu, "logvar": logvar, "eps": eps[i:i + 1]})
                  for i in range(0, 2000)]  # one-sample estimates, for the spread
    g = answer("score_function_gradient", {"f": np.square, "mu": mu, "logvar": logvar, "eps": eps})
    for j, exact in enumerate((2 * mu, np.exp(logvar))):
        se = np.array([p[j] for p in per_sample]).std(axis=0, ddof=1) / math.sqrt(len(eps))
        assert (np.abs(g[j] - exact) < 4 * se).all()


def test_the_update_rules_equal_the_library_optimisers():
    rng = np.random.default_rng(2)
    w0, steps = rng.standard_normal(50), [rng.standard_normal(50) for _ in range(20)]
    lib_w, lib = w0.copy(), Adam(lr=0.01, betas=(0.8, 0.99), eps=1e-6)
    w, m, v = w0.copy(), np.zeros(50), np.zeros(50)
    for t, dw in enumerate(steps, start=1):
        lib.step(lib_w, dw)
        w, m, v = adam(w, dw, m, v, t, 0.01, 0.8, 0.99, 1e-6)
    np.testing.assert_allclose(w, lib_w, rtol=1e-12)
    lib_w, lib = w0.copy(), SGD(lr=0.05, momentum=0.7)
    w, v = w0.copy(), np.zeros(50)
    for dw in steps:
        lib.step(lib_w, dw)
        w, v = PARTS["sgd_momentum_step"].answer({"w": w, "dw": dw, "v": v, "lr": 0.05, "momentum": 0.7})
    np.testing.assert_allclose(w, lib_w, rtol=1e-12)


def test_the_reference_loop_overfits_a_tiny_batch():
    model, x = tiny_problem(3, n=16)
    losses_ = reference_train(model, x, 150, 8, 0.01, reference_update, np.random.default_rng(0))
    assert np.mean(losses_[-50:]) < 0.5 * np.mean(losses_[:5])


def test_the_reference_loop_steps_as_the_library_adam_does_on_the_same_batches():
    # one Adam over the model's flat parameter vector, on the minibatches of the same orders: the same run
    model, x = tiny_problem(4, n=20)
    twin, _ = tiny_problem(4, n=20)
    losses_ = reference_train(model, x, 3, 6, 0.01, reference_update, np.random.default_rng(1))
    rng, t, opt = np.random.default_rng(1), 0, Adam(lr=0.01)
    for epoch in range(3):
        order = rng.permutation(len(x))
        for start in range(0, len(x), 6):
            loss, grads = twin.loss_and_grads(x[order[start:start + 6]])
            opt.step(twin.flat_params, np.concatenate([grads[name].ravel() for name in twin.params]))
            assert loss == pytest.approx(losses_[t], rel=1e-12)
            t += 1
    assert norm_error(model.flat_params, twin.flat_params) < 1e-12


def test_importance_weights_under_the_exact_posterior_are_exactly_p_of_x():
    # with one latent dimension the exact posterior is a diagonal Gaussian, so every weight equals p(x)
    for seed in range(5):
        c = case_of("log_weights", seed)
        W = c["W"][:1]  # (1, D): one latent dimension
        post_var = 1 / (1 + W[0] @ W[0] / c["sigma_x"] ** 2)
        post_mean = post_var * W[0] @ (c["x"] - c["b"]) / c["sigma_x"] ** 2
        z = post_mean + math.sqrt(post_var) * np.random.default_rng(seed).standard_normal((7, 1))
        c = {**c, "W": W, "z": z, "mu": np.array([post_mean]), "logvar": np.array([math.log(post_var)])}
        exact = answer("exact_log_likelihood", c)[0]
        np.testing.assert_allclose(answer("log_weights", c)[0], exact, rtol=1e-10)
        assert answer("iw_estimate", {"log_w": answer("log_weights", c)[0]})[0] == pytest.approx(exact, rel=1e-10)


def test_the_log_sum_exps_equal_numpys():
    for seed in range(10):
        c = case_of("streaming_logsumexp", seed)
        assert answer("streaming_logsumexp", c)[0] == pytest.approx(np.logaddexp.reduce(np.concatenate(c["chunks"])))
        c = case_of("iw_estimate", seed)
        want = np.logaddexp.reduce(c["log_w"]) - math.log(len(c["log_w"]))
        assert answer("iw_estimate", c)[0] == pytest.approx(want)


def test_the_gaussian_kl_is_the_integral_of_q_log_q_over_p():
    z = np.linspace(-30, 30, 600_001)
    for seed in range(5):
        c = case_of("gaussian_kl", seed)
        want = []
        for mu_n, lv_n in zip(c["mu"], c["logvar"]):
            total = 0.0
            for m, lv in zip(mu_n, lv_n):
                log_q = -0.5 * (np.log(2 * np.pi) + lv + (z - m) ** 2 / np.exp(lv))
                log_p = -0.5 * (np.log(2 * np.pi) + z**2)
                total += np.sum(np.exp(log_q) * (log_q - log_p)) * (z[1] - z[0])
            want.append(total)
        assert np.allclose(answer("gaussian_kl", c)[0], want, rtol=0, atol=1e-7)
        lib = losses.kl_per_dimension(c["mu"], c["logvar"])[0].sum(axis=1)
        assert np.allclose(answer("gaussian_kl", c)[0], lib, rtol=1e-12)


def test_the_planar_map_equals_the_librarys():
    """The exercise's map, its constraint and its backward pass are minivae.flows' (which takes u free)."""
    from minivae.flows import PlanarFlow, constrained_u
    for seed in range(5):
        c = case_of("constrained_u", seed)
        u_hat = answer("constrained_u", c)[0]
        assert np.allclose(u_hat, constrained_u(c["u"], c["w"])[0])
        f = case_of("planar_backward", seed)
        L = len(f["w"])
        flow = PlanarFlow(f["u"], f["w"], f["b"], np.zeros(L), np.zeros(L), np.zeros(1))
        library = {"u": f["u"]}
        f = dict(f, u=constrained_u(f["u"], f["w"])[0])  # the exercise takes the u the map uses
        z_next, logdet = flow.forward(f["z"])
        assert all(np.allclose(a, b) for a, b in zip((z_next, logdet), answer("planar_forward", f)))
        dz = flow.backward(f["dz_next"], f["dlogdet"])
        right = answer("planar_backward", f)
        assert np.allclose(dz, right[0]) and np.allclose(flow.grads["b"], right[3]), library


def test_the_mixture_equals_the_librarys():
    """The exercise's density (one component at a time) and its backward pass are minivae.priors' (matrix
    products), and the density integrates to 1."""
    from minivae.priors import mixture_backward, mixture_log_density
    for seed in range(5):
        c = case_of("mixture_backward", seed)
        args = (c["z"], c["log_weights"], c["means"], c["logvars"])
        assert all(np.allclose(a, b, rtol=1e-12) for a, b in zip(mixture_log_density(*args),
                                                                 answer("mixture_log_density", c)))
        library = mixture_backward(c["z"], c["r"], c["means"], c["logvars"], c["dlog_p"])
        assert all(np.allclose(a, b, rtol=1e-10) for a, b in zip(library, answer("mixture_backward", c)))
    c = case_of("mixture_log_density", 0)
    two = c["log_weights"][:2] - np.logaddexp.reduce(c["log_weights"][:2])  # two components, weights renormalised
    c = dict(c, log_weights=two, means=c["means"][:2, :2], logvars=c["logvars"][:2, :2])
    grid = np.linspace(-15, 15, 601)
    c["z"] = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2)
    assert np.exp(answer("mixture_log_density", c)[0]).sum() * (grid[1] - grid[0]) ** 2 == pytest.approx(1, abs=1e-6)


def test_the_bound_is_the_log_mean_weight_and_free_bits_match_the_library():
    for seed in range(10):
        c = case_of("iwae_bound", seed)
        want = np.logaddexp.reduce(c["log_w"], axis=1) - math.log(c["log_w"].shape[1])
        assert np.allclose(answer("iwae_bound", c)[0], want, rtol=1e-12)
    # the library's loss with free bits, less its loss without the KL, is the term at beta = 1
    model = VAE(6, hidden_dims=(5,), latent_dim=3, activation="tanh", dtype="float64", seed=1)
    rng = np.random.default_rng(0)
    x, eps = (rng.random((8, 6)) < 0.5).astype(float), rng.standard_normal((8, 3))
    mu, logvar = model.encode(x)
    kl = losses.kl_per_dimension(mu, logvar)[0]
    floor = float(np.median(kl.mean(axis=0)))  # one dimension on each side of the floor, one on it
    with_floor, _ = model.loss_and_grads(x, eps, free_bits=floor)
    without_kl, _ = model.loss_and_grads(x, eps, kl_weight=0.0)
    penalty, _ = answer("free_bits_kl", {"kl": kl, "beta": 1.0, "free_bits": floor})
    assert with_floor - without_kl == pytest.approx(float(penalty), rel=1e-12)


def past_histograms_fails(model, message):
    with pytest.raises(ExerciseFailed) as failed:
        check("past_the_histograms", lambda x: model, quiet=True)
    assert message in str(failed.value), str(failed.value)


def test_the_experiment_scores_a_pmf_of_the_digits_against_the_histograms():
    # untrained models, so no training is needed to fail: a density of other data, then pmfs that lose
    past_histograms_fails(VAE(64, hidden_dims=(8,), latent_dim=2), "a probability of the 17 grey levels")
    past_histograms_fails(VAE(64, hidden_dims=(8,), latent_dim=2, likelihood="categorical", levels=5),
                          "a probability of the 17 grey levels")
    past_histograms_fails(VAE(64, hidden_dims=(8,), latent_dim=2, likelihood="beta_binomial", trials=16),
                          "above 0 by more than four standard errors")
    past_histograms_fails(VAE(64, hidden_dims=(8,), latent_dim=2, likelihood="binomial", trials=16, n_classes=10),
                          "without labels")
    past_histograms_fails("a model", "a trained minivae.VAE of the 64-pixel digits")


# ---------------------------------------------------------------- never a false fail
# each case trains or differences a whole model
TRAINING_PARTS = ("train", "finite_differences", "find_bug", "past_the_histograms")


@pytest.mark.parametrize("name", [pytest.param(name, marks=[pytest.mark.slow] if name in TRAINING_PARTS else [])
                                  for name in PARTS])
def test_a_right_answer_passes_many_random_cases(name):
    # the parts that train or difference whole models take a fraction of a second a case: 100 of theirs
    draws = {"past_the_histograms": 2}.get(name, 100 if name in TRAINING_PARTS else 1000)
    assert check_part(PARTS[name], SOLVED[name], seed=20261125, draws=draws, quiet=True) < 1e-6


def test_the_checks_do_not_depend_on_what_ran_before():
    first = case_of("dense_backward", 0)
    np.random.default_rng(0).standard_normal(100)  # whatever else the notebook draws
    np.random.seed(5)
    again = case_of("dense_backward", 0)
    assert all(np.array_equal(first[k], again[k]) for k in first)


# ---------------------------------------------------------------- every known mistake is named
CATALOGUE = [(name, m) for name, part in PARTS.items() for m in part.mistakes]


def test_the_catalogue_is_large_enough():
    assert len(CATALOGUE) >= 40


@pytest.mark.parametrize("name, mistake", CATALOGUE, ids=[f"{n}-{m.name}" for n, m in CATALOGUE])
def test_a_known_mistake_fails_with_its_message(name, mistake):
    part = PARTS[name]

    def wrong(*args):
        return mistake.answer(dict(zip(part.args, args)))[0 if len(part.outputs) == 1 else slice(None)]

    for seed in range(100):
        with pytest.raises(ExerciseFailed) as failed:
            check(name, wrong, seed=seed, draws=1, quiet=True)
        assert mistake.message in str(failed.value), (seed, str(failed.value))


def fresh_eps_backward(dz, logvar, eps):
    eps = np.random.standard_normal(eps.shape)  # the mistake: new noise in backward
    return dz, dz * eps * np.exp(logvar / 2) / 2


def in_place_tanh(dy, y):
    dy *= 1 - y**2
    return dy


def naive_logsumexp(chunks):
    with np.errstate(over="ignore", divide="ignore"):
        return np.log(sum(np.exp(c).sum() for c in chunks))


def naive_bernoulli(logits, x):
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        p = 1 / (1 + np.exp(-logits))
        return (x * np.log(p) + (1 - x) * np.log(1 - p)).sum(axis=1)


def unwritten(*args):
    raise NotImplementedError


COMMON = [
    ("kl_backward", lambda mu, lv: (-mu, (np.exp(lv) - 1) / 2), "dmu is wrong: it has the wrong sign"),
    ("kl_backward", lambda mu, lv: (2 * mu, (np.exp(lv) - 1) / 2), "off by a factor of 2"),
    ("dense_backward", lambda dy, x, W: (dy @ W.T, dy.T @ x, dy.sum(0)), "the transpose of"),
    ("vae_backward", lambda p, x, e: reference(p, x, e, mean=False)[1], "a missing 1/N"),
    ("heads_backward", lambda dmu, dlv, h, Wm, Wl: (dmu @ Wm.T / len(h) + dlv @ Wl.T / len(h), h.T @ dmu, h.T @ dlv),
     "an extra 1/N"),
    ("sample_backward", fresh_eps_backward, "draws fresh random numbers"),
    ("tanh_backward", in_place_tanh, "changed its input 'dy' in place"),
    ("streaming_logsumexp", naive_logsumexp, "without the max shift"),
    ("bernoulli_log_prob", naive_bernoulli, "log(sigmoid(l))"),
    ("dense_backward", unwritten, "not written yet"),
    ("dense_backward", lambda dy, x, W: (dy @ W.T, x.T @ dy), "should return 3 things"),
    ("gaussian_log_prob", lambda x, m, lv: np.zeros(100), "its shape is (100,)"),
]


@pytest.mark.parametrize("name, wrong, message", COMMON, ids=[f"{c[0]}-{c[2][:24]}" for c in COMMON])
def test_a_common_mistake_is_named(name, wrong, message):
    with pytest.raises(ExerciseFailed, match=None) as failed:
        check(name, wrong, draws=30, quiet=True)
    assert message in str(failed.value), str(failed.value)


def words(text):
    return set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*(?:\.[A-Za-z_0-9]+)*", text))


def own_quantities(part):
    return words(part.signature) | set(part.args) | set(part.outputs) | set(part.terms.split())


# every quantity some part has; "mean" is plain English too, and "p" any probability
QUANTITIES = set().union(*(own_quantities(p) for p in PARTS.values())) - {"mean", "p"}


def explanations(part):
    """Every explanation the part can give: its catalogue, and the 1/N messages where it has a batch."""
    found = [m.message for m in part.mistakes]
    if part.batch:
        found += [factor_message(7.0, 7, part.batch_mean), factor_message(1 / 7, 7, part.batch_mean)]
    return found


@pytest.mark.parametrize("name", PARTS)
def test_every_explanation_names_only_quantities_its_part_has(name):
    part = PARTS[name]
    for message in explanations(part):
        foreign = (words(message) & QUANTITIES) - own_quantities(part)
        assert not foreign, f"{name}'s explanation names {sorted(foreign)}, which it does not have: {message}"
        assert ("batch mean" in message) <= part.batch_mean, f"{name} averages nothing: {message}"


def test_an_extra_1_over_n_in_a_part_without_a_mean_is_not_blamed_on_a_mean():
    def divided(dy, x, W):
        return dy @ W.T, x.T @ dy / len(dy), dy.sum(axis=0)

    with pytest.raises(ExerciseFailed) as failed:
        check("dense_backward", divided, quiet=True)
    assert "an extra 1/N" in str(failed.value) and "computes no mean" in str(failed.value), str(failed.value)


def test_a_whole_model_backward_names_the_wrong_gradient_nearest_the_loss_and_lists_every_one():
    def wrong_sign_in_decoder_bias(p, x, e):
        grads = reference(p, x, e)[1]
        grads["decoder.0.b"] = -grads["decoder.0.b"]  # only this one is wrong: nothing is computed from it
        return grads

    with pytest.raises(ExerciseFailed) as failed:
        check("vae_backward", wrong_sign_in_decoder_bias, quiet=True)
    first, *table = str(failed.value).split("\n")
    assert first.startswith("vae_backward: decoder.0.b is wrong, the wrong gradient nearest the loss") and \
        "the wrong sign" in first, first
    rows = {line.split()[0]: line.split()[1] for line in table[1:]}
    assert rows == {name: "wrong:" if name == "decoder.0.b" else "right:" for name in PARTS["vae_backward"].outputs}

    with pytest.raises(ExerciseFailed) as failed:  # the KL's sign in dlogvar: the logvar head and everything below
        check("vae_backward", lambda p, x, e: reference(p, x, e, kl_logvar_sign=-1)[1], quiet=True)
    first, *table = str(failed.value).split("\n")
    assert "encoder.logvar.W is wrong, the wrong gradient nearest the loss" in first, first
    wrong = [line.split()[0] for line in table[1:] if line.split()[1] == "wrong:"]
    assert wrong == ["encoder.logvar.W", "encoder.logvar.b", "encoder.0.W", "encoder.0.b"], table


@pytest.mark.parametrize("switches, message", [(dict(shuffle="never"), "the same order every epoch"),
                                               (dict(shuffle="once"), "it shuffles once"),
                                               (dict(t_per_epoch=True), "its step count restarts every epoch")])
def test_a_training_loop_that_shuffles_wrongly_or_restarts_t_is_told_so(switches, message):
    def train(model, x, epochs, batch_size, lr, update, rng):
        return reference_train(model, x, epochs, batch_size, lr, update, rng, **switches)

    with pytest.raises(ExerciseFailed) as failed:
        check("train", train, quiet=True)
    assert message in str(failed.value), str(failed.value)


def test_a_training_loop_that_rebinds_the_parameters_is_told_so():
    def train(model, x, epochs, batch_size, lr, update, rng):
        moments = {n: (np.zeros_like(p), np.zeros_like(p)) for n, p in model.params.items()}
        out, t = [], 0
        for epoch in range(epochs):
            order = rng.permutation(len(x))
            for start in range(0, len(x), batch_size):
                t += 1
                loss, grads = model.loss_and_grads(x[order[start:start + batch_size]])
                for n, p in model.params.items():
                    model.params[n], *_ = update(p, grads[n], *moments[n], t, lr, 0.9, 0.999, 1e-8)
                out.append(loss)
        return out

    with pytest.raises(ExerciseFailed, match=r"p\[\.\.\.\] = new"):
        check("train", train, quiet=True)


def test_finite_differences_that_forget_to_restore_or_lean_one_way_are_told_so():
    def no_restore(loss, params, h=1e-5):
        out = {}
        for name, p in params.items():
            g = np.zeros_like(p)
            for i in np.ndindex(p.shape):
                old = p[i]
                p[i] = old + h
                up = loss()
                p[i] = old - h
                g[i] = (up - loss()) / (2 * h)
            out[name] = g
        return out

    def one_sided(loss, params, h=1e-5):
        out = {}
        for name, p in params.items():
            g = np.zeros_like(p)
            for i in np.ndindex(p.shape):
                old = p[i]
                base = loss()
                p[i] = old + h
                g[i] = (loss() - base) / h
                p[i] = old
            out[name] = g
        return out

    with pytest.raises(ExerciseFailed, match="restore each entry"):
        check("finite_differences", no_restore, quiet=True)
    with pytest.raises(ExerciseFailed, match="one-sided"):
        check("finite_differences", one_sided, quiet=True)


def largest_error_finder(threshold):
    """A bug finder that names the gradient with the largest error above ``threshold`` (a learner's first try)."""
    def find(model):
        numeric = SOLVED["finite_differences"](model.loss, model.params)
        errors = {n: norm_error(g, numeric[n]) for n, g in model.grads().items()}
        worst = max(errors, key=errors.get)
        return worst if errors[worst] > threshold else None
    return find


def test_a_bug_finder_with_too_tight_a_threshold_is_told_so():
    tight = largest_error_finder(1e-14)
    clean = [seed for seed in range(100)  # the check's seeds whose one model has no bug
             if PlantedBugModel(int(stream("find_bug", seed).integers(2**31))).planted() is None]
    for seed in clean[:3]:
        with pytest.raises(ExerciseFailed, match="gradients are all right"):
            check("find_bug", tight, seed=seed, draws=1, quiet=True)


def test_the_planted_bugs_are_found_by_a_gradient_check_and_vary_with_the_seed():
    planted = [PlantedBugModel(seed).planted() for seed in range(60)]
    assert None in planted and len(set(planted)) >= 8
    assert all(SOLVED["find_bug"](PlantedBugModel(seed)) == planted[seed] for seed in range(20))


def test_an_inner_bug_spoils_the_gradients_after_it_and_the_first_is_where_to_look():
    models = [PlantedBugModel(seed) for seed in range(60)]
    spread = [m for m in models if len(m.wrong()) > 1]  # bugs in an inner signal of the backward pass
    assert len(spread) >= 15
    for m in spread:
        numeric = {name: numerical_gradient(m.loss, p, h=1e-5) for name, p in m.params.items()}
        wrong = [name for name in FROM_LOSS if norm_error(m.grads()[name], numeric[name]) > 1e-5]
        assert wrong == m.wrong() and m.planted() == wrong[0]  # proved by finite differences, not by the model


def test_a_bug_finder_that_names_the_largest_error_is_told_to_look_nearer_the_loss():
    with pytest.raises(ExerciseFailed, match="name the first wrong one"):
        check("find_bug", largest_error_finder(1e-5), draws=40, quiet=True)


def test_an_unknown_part_is_named():
    with pytest.raises(KeyError, match="no exercise part named 'dense'"):
        check("dense", lambda: None)


# ---------------------------------------------------------------- the notebooks carry it
def test_the_track_has_its_notebooks_and_every_part_once():
    graded, written = {}, []
    for path in SOLUTIONS:
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.metadata.get("nbgrader", {})
            if meta.get("grade") and cell.cell_type == "markdown":
                written.append(meta["grade_id"])
            elif meta.get("grade"):
                name = meta["grade_id"].removeprefix("test_")
                assert name not in graded, f"{name} is graded twice"
                graded[name] = (path.name, meta["points"])
                assert f'check("{name}", {name})' in cell.source
                # a graded experiment trains once: another seed of the check would only train it again
                assert "BEGIN HIDDEN TESTS" in cell.source or name == "past_the_histograms"
    assert len(SOLUTIONS) >= 11 and len(graded) >= 38 and len(written) >= 3 and len(set(written)) == len(written)
    assert set(graded) == set(PARTS)
    assert all(points == PARTS[name].points for name, (_, points) in graded.items())
    assert all(PARTS[name].lesson == path[:-len(".ipynb")] for name, (path, _) in graded.items())


def test_every_solution_is_in_a_solution_cell_and_every_test_is_locked():
    for path in SOLUTIONS:
        for cell in nbformat.read(path, as_version=4).cells:
            meta = cell.metadata.get("nbgrader")
            assert meta and meta.get("grade_id"), f"{path.name}: a cell without nbgrader metadata"
            if "### BEGIN SOLUTION" in cell.source:
                assert meta["solution"] and not meta["grade"] and not meta["locked"]
            elif cell.cell_type == "markdown" and meta["solution"]:  # a written answer, graded by hand
                assert meta["grade"] and not meta["locked"] and meta["points"] > 0 and "**Rubric" in cell.source
            elif meta["grade"]:
                assert meta["locked"] and meta["points"] > 0
            else:
                assert meta["locked"], f"{path.name}: {meta['grade_id']} should be read-only"
