"""Likelihoods, KL and the β-TCVAE estimators against hand / brute-force computations."""
import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence as torch_kl

from training.config import ModelConfig, model_config
from training.errors import UserError
from training.losses import (
    annealed_objective, bernoulli_nll, beta_objective, btcvae_objective, capacity, gaussian_kl, gaussian_nll,
    kl_divergence, log_density_gaussian, log_weights_mss, log_weights_mws, reconstruction_nll, tc_decomposition,
    warmup_weight)


def test_gaussian_kl_hand_values():
    # KL(N(1, 1) || N(0, 1)) = ½·1² = 0.5;  KL(N(0, 4) || N(0, 1)) = ½(4 − 1 − ln 4) = 0.806852...
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(4.0)]])
    per_dim = gaussian_kl(mu, logvar)
    assert per_dim.shape == (1, 2)
    assert per_dim[0, 0].item() == pytest.approx(0.5, abs=1e-6)
    assert per_dim[0, 1].item() == pytest.approx(0.5 * (3.0 - math.log(4.0)), abs=1e-6)
    assert kl_divergence(mu, logvar).item() == pytest.approx(0.5 + 0.5 * (3.0 - math.log(4.0)), abs=1e-6)


def test_gaussian_kl_matches_torch_distributions_and_reduces_sum_dims_mean_batch():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    reference = torch_kl(Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros(5, 7), torch.ones(5, 7)))
    assert torch.allclose(gaussian_kl(mu, logvar), reference, atol=1e-5)
    assert kl_divergence(mu, logvar).item() == pytest.approx(reference.sum(1).mean().item(), rel=1e-5)


def test_bernoulli_nll_matches_manual_formula():
    g = torch.Generator().manual_seed(1)
    logits = 3 * torch.randn(4, 1, 5, 5, generator=g)
    x = torch.rand(4, 1, 5, 5, generator=g).round()
    p = torch.sigmoid(logits.double())
    manual = -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum() / 4
    assert bernoulli_nll(logits, x).item() == pytest.approx(manual.item(), rel=1e-5)
    assert bernoulli_nll(logits, x).item() == pytest.approx(-Bernoulli(logits=logits).log_prob(x).sum().item() / 4,
                                                            rel=1e-5)


def test_gaussian_nll_is_normal_log_prob_sum():
    g = torch.Generator().manual_seed(2)
    mean, x = torch.rand(3, 2, 4, 4, generator=g), torch.rand(3, 2, 4, 4, generator=g)
    reference = -Normal(mean, 0.1).log_prob(x).sum() / 3
    assert gaussian_nll(mean, x, 0.1).item() == pytest.approx(reference.item(), rel=1e-5)
    # A perfect reconstruction still costs the normaliser: D·(log σ + ½ log 2π) nats.
    assert gaussian_nll(x, x, 0.1).item() == pytest.approx(32 * (math.log(0.1) + 0.5 * math.log(2 * math.pi)),
                                                           rel=1e-5)


def test_reductions_are_mean_over_batch():
    # Duplicating the batch must not change any term: sum over pixels/dims, mean over the batch.
    g = torch.Generator().manual_seed(3)
    logits, x = torch.randn(2, 1, 4, 4, generator=g), torch.rand(2, 1, 4, 4, generator=g)
    mu, logvar = torch.randn(2, 3, generator=g), torch.randn(2, 3, generator=g)
    twice = lambda t: torch.cat([t, t])
    assert bernoulli_nll(twice(logits), twice(x)).item() == pytest.approx(bernoulli_nll(logits, x).item(), rel=1e-6)
    assert gaussian_nll(twice(logits), twice(x), 0.3).item() == pytest.approx(
        gaussian_nll(logits, x, 0.3).item(), rel=1e-6)
    assert kl_divergence(twice(mu), twice(logvar)).item() == pytest.approx(kl_divergence(mu, logvar).item(), rel=1e-6)


def test_reconstruction_nll_dispatches_on_likelihood():
    x = torch.rand(2, 1, 3, 3)
    params = torch.rand(2, 1, 3, 3)
    assert reconstruction_nll(params, x, ModelConfig(likelihood="bernoulli")).item() == pytest.approx(
        bernoulli_nll(params, x).item())
    assert reconstruction_nll(params, x, ModelConfig(likelihood="gaussian", gaussian_std=0.2)).item() == \
        pytest.approx(gaussian_nll(params, x, 0.2).item())


def test_log_density_gaussian_matches_normal():
    g = torch.Generator().manual_seed(4)
    x, mu, logvar = (torch.randn(6, generator=g) for _ in range(3))
    expected = Normal(mu, (0.5 * logvar).exp()).log_prob(x)
    assert torch.allclose(log_density_gaussian(x, mu, logvar), expected, atol=1e-5)


# ---- β-TCVAE: brute force straight from the definitions ---------------------------------------------------
def normal_pdf(x, mu, logvar):
    var = math.exp(logvar)
    return math.exp(-(x - mu) ** 2 / (2 * var)) / math.sqrt(2 * math.pi * var)


def brute_force_weight(i, j, batch, n, estimator):
    if estimator == "mws":
        return 1.0 / (n * batch)
    m = batch - 1
    if i == j:
        return 1.0 / n
    if j == (i + 1) % batch:
        return (n - m) / (n * m)
    return 1.0 / m


def brute_force_tc(z, mu, logvar, n, estimator):
    batch, dims = len(z), len(z[0])
    mi = tc = dwkl = 0.0
    for i in range(batch):
        log_q_given_x = sum(math.log(normal_pdf(z[i][d], mu[i][d], logvar[i][d])) for d in range(dims))
        q_joint = 0.0
        for j in range(batch):
            density = 1.0
            for d in range(dims):
                density *= normal_pdf(z[i][d], mu[j][d], logvar[j][d])
            q_joint += brute_force_weight(i, j, batch, n, estimator) * density
        log_prod_marginals = 0.0
        for d in range(dims):
            q_d = sum(brute_force_weight(i, j, batch, n, estimator) * normal_pdf(z[i][d], mu[j][d], logvar[j][d])
                      for j in range(batch))
            log_prod_marginals += math.log(q_d)
        log_p = sum(math.log(normal_pdf(z[i][d], 0.0, 0.0)) for d in range(dims))
        mi += (log_q_given_x - math.log(q_joint)) / batch
        tc += (math.log(q_joint) - log_prod_marginals) / batch
        dwkl += (log_prod_marginals - log_p) / batch
    return mi, tc, dwkl


@pytest.mark.parametrize("estimator", ["mws", "mss"])
def test_tc_estimators_match_brute_force(estimator):
    g = torch.Generator().manual_seed(5)
    batch, dims, n = 5, 3, 50
    mu = 0.8 * torch.randn(batch, dims, generator=g, dtype=torch.float64)
    logvar = 0.5 * torch.randn(batch, dims, generator=g, dtype=torch.float64) - 1.0
    z = mu + torch.randn(batch, dims, generator=g, dtype=torch.float64) * (0.5 * logvar).exp()
    terms = tc_decomposition(z, mu, logvar, n, estimator)
    mi, tc, dwkl = brute_force_tc(z.tolist(), mu.tolist(), logvar.tolist(), n, estimator)
    assert terms.mi.item() == pytest.approx(mi, abs=1e-8)
    assert terms.tc.item() == pytest.approx(tc, abs=1e-8)
    assert terms.dwkl.item() == pytest.approx(dwkl, abs=1e-8)
    # The three terms telescope to the one-sample KL estimate E[log q(z|x) − log p(z)].
    kl_sample = (log_density_gaussian(z, mu, logvar) - log_density_gaussian(z, z.new_zeros(()), z.new_zeros(())))
    total = (terms.mi + terms.tc + terms.dwkl).item()
    assert total == pytest.approx(kl_sample.sum(1).mean().item(), abs=1e-8)


def test_estimators_differ_and_mss_weights_sum_to_one():
    w = log_weights_mss(6, 100).double().exp()
    assert torch.allclose(w.sum(1), torch.ones(6, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(w.diagonal(), torch.full((6,), 0.01, dtype=torch.float64))
    assert log_weights_mws(6, 100).exp().sum(1)[0].item() == pytest.approx(0.01, rel=1e-5)


def test_tc_decomposition_needs_dataset_size():
    z = torch.zeros(4, 2)
    with pytest.raises(UserError, match="dataset_size"):
        tc_decomposition(z, z, z, 0, "mws")


# ---- objectives ---------------------------------------------------------------------------------------------
def test_capacity_schedule_is_linear_then_flat():
    cfg = model_config(name="annealed-vae", c_max=25.0, c_steps=100)
    assert capacity(cfg, 0) == 0.0
    assert capacity(cfg, 50) == pytest.approx(12.5)
    assert capacity(cfg, 100) == pytest.approx(25.0)
    assert capacity(cfg, 10_000) == pytest.approx(25.0)


def test_warmup_ramps_the_whole_regulariser_and_is_logged_only_when_configured():
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2)          # KL = 0.5
    recon, kl = torch.tensor(10.0), kl_divergence(torch.tensor([[1.0, 0.0]]), torch.zeros(1, 2))
    cfg = model_config(name="beta-vae", beta=4.0, warmup_steps=100)
    assert [warmup_weight(cfg, s) for s in (0, 25, 100, 5000)] == [0.0, 0.25, 1.0, 1.0]
    loss, terms = beta_objective(recon, kl, mu, logvar, mu, cfg, 25)
    assert loss.item() == pytest.approx(10.0 + 0.25 * 4.0 * 0.5) and terms == {"warmup": 0.25}
    assert beta_objective(recon, kl, mu, logvar, mu, model_config(name="beta-vae", beta=4.0), 25)[1] == {}
    g = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    z = mu + torch.randn(4, 2, generator=g)
    full = model_config(name="btcvae", alpha=2.0, beta=3.0, tc_gamma=5.0, dataset_size=10)
    warm = model_config(name="btcvae", alpha=2.0, beta=3.0, tc_gamma=5.0, dataset_size=10, warmup_steps=40)
    loss_full, terms = btcvae_objective(recon, kl, mu, logvar, z, full, 10)
    loss_warm, warm_terms = btcvae_objective(recon, kl, mu, logvar, z, warm, 10)
    assert loss_warm.item() == pytest.approx(10.0 + 0.25 * (loss_full.item() - 10.0), rel=1e-5)
    assert warm_terms["warmup"] == 0.25 and "warmup" not in terms
    assert btcvae_objective(recon, kl, mu, logvar, z, warm, 40)[0].item() == pytest.approx(loss_full.item())
    for bad in (-1, 2.5, True):
        with pytest.raises(UserError, match="warmup_steps"):
            model_config(name="btcvae", warmup_steps=bad).check_fields()


def test_objectives_weight_the_terms_as_documented():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.zeros(1, 2)          # KL = 0.5
    recon = torch.tensor(10.0)
    kl = kl_divergence(mu, logvar)
    loss, _ = beta_objective(recon, kl, mu, logvar, mu, model_config(name="beta-vae", beta=4.0), 0)
    assert loss.item() == pytest.approx(10.0 + 4.0 * 0.5)
    cfg = model_config(name="annealed-vae", gamma=100.0, c_max=2.0, c_steps=10)
    loss, terms = annealed_objective(recon, kl, mu, logvar, mu, cfg, 5)   # C = 1.0, |0.5 − 1| = 0.5
    assert loss.item() == pytest.approx(10.0 + 100.0 * 0.5)
    assert float(terms["capacity"]) == pytest.approx(1.0)
    cfg = model_config(name="btcvae", alpha=2.0, beta=3.0, tc_gamma=5.0, dataset_size=10)
    g = torch.Generator().manual_seed(6)
    mu, logvar = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    z = mu + torch.randn(4, 2, generator=g)
    loss, terms = btcvae_objective(recon, kl_divergence(mu, logvar), mu, logvar, z, cfg, 0)
    assert loss.item() == pytest.approx(10.0 + 2.0 * terms["mi"].item() + 3.0 * terms["tc"].item()
                                        + 5.0 * terms["dwkl"].item(), rel=1e-5)
