"""Planar flows: the map's log-determinant against its Jacobian, the constraint on u, every gradient of the
FlowVAE against finite differences, its density's normalisation, and its checkpoints."""

import numpy as np
import pytest

import minivae
from minivae import VAE, to_numpy
from minivae.flows import FlowVAE, PlanarFlow, constrained_u
from minivae.gradcheck import rel_error

from gradients import LIKELIHOOD_CONFIGS, LIKELIHOOD_IDS, checked_gradients, data_for



def tiny(backend="numpy", flow_length=3, hidden_dims=(5,), seed=3, **kwargs):
    return FlowVAE(6, flow_length=flow_length, hidden_dims=hidden_dims, latent_dim=3, activation="tanh",
                   dtype="float64", backend=backend, seed=seed, **kwargs)


def bent(model, rng, scale=1.0):
    """Flow parameters far from their small start, so that every term of the derivative matters."""
    for k in range(model.flow_length):
        for name, shape in (("u", (model.latent_dim,)), ("w", (model.latent_dim,)), ("b", (1,))):
            model.params[f"flow.{k}.{name}"][...] = model.xp.asarray(scale * rng.standard_normal(shape))
    return model


def planar(rng, L=3):
    u, w, b = rng.standard_normal(L), rng.standard_normal(L), rng.standard_normal(1)
    grads = [np.zeros(L), np.zeros(L), np.zeros(1)]
    return PlanarFlow(u, w, b, *grads)


def test_the_log_determinant_is_the_log_of_the_jacobians_determinant(rng):
    flow = planar(rng)
    z = rng.standard_normal((5, 3))
    _, logdet = flow.forward(z)
    h = 1e-6
    for i in range(len(z)):
        jacobian = np.empty((3, 3))
        for j in range(3):
            up, down = z[i:i + 1].copy(), z[i:i + 1].copy()
            up[0, j] += h
            down[0, j] -= h
            jacobian[:, j] = (flow.forward(up)[0][0] - flow.forward(down)[0][0]) / (2 * h)
        assert logdet[i] == pytest.approx(np.log(abs(np.linalg.det(jacobian))), abs=1e-8)


def test_the_constrained_u_keeps_every_map_invertible(rng):
    """``w . u_hat > -1`` for any u and w, so the determinant is positive everywhere, even where u fights w.

    (In float64, ``m(a) = -1 + softplus(a)`` rounds to -1 below ``a`` of about -37, where ``1 + m`` is under
    the rounding of 1; the cases here reach ``w . u = -30``.)
    """
    for _ in range(200):
        w = rng.standard_normal(3) * rng.uniform(0.1, 5)
        u = -w * rng.uniform(0, 30 / (w @ w)) + 0.1 * rng.standard_normal(3)  # against w: not invertible as it is
        u_hat, wu_hat, a = constrained_u(u, w)
        assert wu_hat > -1 and np.isclose(w @ u_hat, wu_hat) and np.isclose(a, w @ u)
        flow = PlanarFlow(u, w, np.array([0.3]), np.zeros(3), np.zeros(3), np.zeros(1))
        along = np.linspace(-50, 50, 2001)[:, None] * w / (w @ w)  # a line across the hyperplane
        moved = flow.forward(along)[0] @ w
        assert np.all(np.diff(moved) > 0)  # w . f(z) increases along w: the map is one-to-one there
    w = np.array([1.0, 0.5, -0.2])
    u = -3 * w  # w . u = -3.9, far below -1: the constraint is what saves it
    assert w @ u < -1 < constrained_u(u, w)[1]


@pytest.mark.parametrize("config", LIKELIHOOD_CONFIGS, ids=LIKELIHOOD_IDS)
def test_every_gradient_matches_finite_differences(config, backend, rng):
    model = bent(tiny(backend, beta=0.7, **config), rng)
    x = data_for(config, rng, 4)
    report = checked_gradients(model, x, rng.standard_normal((4, 3)))
    assert set(report.errors) == set(model.params) and any(name.startswith("flow.") for name in report.errors)
    assert report.max_error < 1e-7, str(report)


def test_without_maps_it_is_the_vae_with_a_sampled_kl(rng):
    flowless, plain = tiny(flow_length=0, likelihood="bernoulli"), VAE(6, hidden_dims=(5,), latent_dim=3,
                                                                       activation="tanh", dtype="float64", seed=3)
    assert np.array_equal(flowless.flat_params, plain.flat_params)
    x, eps = (rng.random((4, 6)) > 0.5).astype(float), rng.standard_normal((4, 2, 3))
    np.testing.assert_allclose(flowless.log_weights(x, eps), plain.log_weights(x, eps), rtol=1e-12)
    # the two losses differ by the KL's estimator alone: the sampled one averages to the closed form
    draws = rng.standard_normal((20000, 3))
    sampled = float(flowless.forward_backward(np.repeat(x[:1], len(draws), axis=0), draws)[2])
    exact = float(plain.forward_backward(x[:1], draws[:1])[2])
    mu, logvar = plain.encoder_forward(x[:1])
    z = mu + np.exp(0.5 * logvar) * draws
    per_draw = 0.5 * ((z * z).sum(axis=1) - (logvar + draws * draws).sum(axis=1))  # log q_0(z) - log p(z)
    assert sampled == pytest.approx(per_draw.mean(), rel=1e-9)
    assert abs(sampled - exact) < 4 * per_draw.std() / np.sqrt(len(draws))


def test_the_flow_posterior_is_a_normalised_density(rng):
    """``E_q[p(z) / q(z)] = 1`` for any normalised ``q``: a wrong log-determinant would move the mean off 1."""
    model = bent(tiny(flow_length=4, likelihood="bernoulli"), rng, scale=0.6)
    x = np.zeros((1, 6))
    mu, logvar = model.encoder_forward(x)
    eps = rng.standard_normal((200000, 3))
    z0 = mu + np.exp(0.5 * logvar) * eps
    z, logdet = model.flow_forward(z0)
    log_q = -0.5 * ((logvar + eps * eps).sum(axis=1) + 3 * np.log(2 * np.pi)) - logdet
    ratio = np.exp(-0.5 * ((z * z).sum(axis=1) + 3 * np.log(2 * np.pi)) - log_q)
    se = ratio.std() / np.sqrt(len(ratio))
    assert abs(ratio.mean() - 1) < 4 * se and se < 0.05
    wrong = np.exp(-0.5 * ((z * z).sum(axis=1) + 3 * np.log(2 * np.pi)) - (log_q - logdet))  # logdet's sign flipped
    assert abs(wrong.mean() - 1) > 4 * wrong.std() / np.sqrt(len(wrong))


def test_a_flow_checkpoint_comes_back_as_a_flow(tmp_path, rng):
    model = bent(tiny(likelihood="bernoulli"), rng)
    model.fit((rng.random((20, 6)) > 0.5).astype(float), epochs=2, batch_size=10, progress=False)
    model.save(tmp_path / "flow.npz")
    back = VAE.load(tmp_path / "flow.npz")
    assert type(back) is FlowVAE and back.flow_length == 3 and back.get_config() == model.get_config()
    assert np.array_equal(to_numpy(back.flat_params), to_numpy(model.flat_params))
    x = np.ones((2, 6))
    np.testing.assert_array_equal(to_numpy(back.elbo(x, eps=np.zeros((2, 3)))),
                                  to_numpy(model.elbo(x, eps=np.zeros((2, 3)))))


def test_a_checkpoint_cannot_ask_for_a_flow_beyond_its_file(tmp_path):
    model = tiny(likelihood="bernoulli")
    model.save(tmp_path / "flow.npz")
    arrays = dict(np.load(tmp_path / "flow.npz"))
    import json
    config = json.loads(str(arrays["config"]))
    for length, message in ((10**12, "more than the 64"), (5, "do not fit its configuration"), ("3", "flow_length")):
        arrays["config"] = np.array(json.dumps({**config, "flow_length": length}))
        np.savez(tmp_path / "bad.npz", **arrays)
        with pytest.raises(ValueError, match=message):
            VAE.load(tmp_path / "bad.npz")
    arrays["config"] = np.array(json.dumps({**config, "family": "nonesuch"}))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match="unknown model family 'nonesuch'"):
        VAE.load(tmp_path / "bad.npz")


def test_a_flow_refuses_what_it_cannot_train():
    model = tiny(likelihood="bernoulli")
    x = np.ones((4, 6))
    for options in (dict(objective="iwae", n_samples=2), dict(free_bits=0.5)):
        with pytest.raises(ValueError, match="trains on the ELBO alone"):
            model.fit(x, epochs=1, progress=False, **options)
    with pytest.raises(ValueError, match="at most 64"):
        tiny(flow_length=65)
    assert model.history_ == []


def test_the_families_build_by_name():
    flow = minivae.families.build({"family": "planar_flow", "input_dim": 6, "flow_length": 2, "latent_dim": 2},
                                  seed=0)
    assert type(flow) is FlowVAE and len([p for p in flow.params if p.startswith("flow.")]) == 6
    assert type(minivae.families.build({"input_dim": 6})) is VAE
    with pytest.raises(ValueError, match="unknown model family"):
        minivae.families.build({"family": "glow", "input_dim": 6})


def test_the_flow_changes_the_posterior_it_samples(rng):
    model = bent(tiny(flow_length=2, likelihood="bernoulli"), rng, scale=2.0)
    x = np.ones((3, 6))
    z = to_numpy(model.posterior_sample(np.repeat(x, 4000, axis=0)))
    mu, logvar = model.encode(x[:1])
    assert rel_error(z.mean(axis=0), to_numpy(mu)[0]) > 0.05  # moved off the Gaussian's mean by the maps
