"""Held-out evaluation: the IW-NLL estimator against an exactly computable model, metric helpers,
and `python -m training evaluate` on tiny real runs (metrics.json, the side-by-side table, bad input)."""
import json
import math
import os
import re
import time

import numpy as np
import pytest
import torch
from torch import nn

from helpers_eval import assert_one_line_user_error, copy_run, python_m_training, tiny_run
from training.config import ModelConfig
from training.evaluate import evaluate_run, format_table
from training.likelihood import (active_units, bits_per_dim, codebook_usage, importance_weighted_batch,
                                 log_px_given_z, psnr_from_mse)
from training.models.base import Encoding, LatentModel


# ---- a tiny model whose marginal likelihood is computable exactly ---------------------------------------------
class OneDimensionalModel(LatentModel):
    """z ~ N(0, 1) (1-D), x | z ~ N(f(z), σ² I) on 4 "pixels", f a small fixed tanh MLP.

    p(x) = ∫ p(x|z) p(z) dz is computed exactly (to ~1e-6 nats) on a fine grid of z. The encoder is a real
    but imperfect posterior: it moment-matches the exact posterior on the grid, then shifts the mean by
    one posterior std and doubles the std (wider, not narrower: a proposal much narrower than the
    posterior gives importance weights of infinite variance), so the ELBO has a gap of about a nat
    that the importance samples close.
    """

    GRID = torch.linspace(-8.0, 8.0, 16001, dtype=torch.float64)   # posterior std here is >= 0.04: ~40 points each

    def __init__(self, sigma: float = 0.3):
        super().__init__()
        self.config = ModelConfig(name="exact-1d", likelihood="gaussian", gaussian_std=sigma, latent_dim=1,
                                  image_size=2, channels=1)
        generator = torch.Generator().manual_seed(3)
        self.decoder = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 4)).double()
        with torch.no_grad():
            for p in self.decoder.parameters():
                p.copy_(torch.randn(p.shape, generator=generator, dtype=torch.float64))
                p.requires_grad_(False)
            self.grid_means = self.decoder(self.GRID[:, None])                 # f(z) on the grid (G, 4)

    @property
    def latent_shape(self) -> tuple:
        return (1,)

    def decode(self, z):
        return self.decoder(z.double()).view(-1, 1, 2, 2)

    def log_joint_on_grid(self, x):
        """log p(x|z) + log p(z) for every grid point z, (B, G)."""
        sigma = self.config.gaussian_std
        diff = (x.double().reshape(-1, 1, 4) - self.grid_means[None]) / sigma
        log_lik = (-0.5 * diff ** 2 - math.log(sigma) - 0.5 * math.log(2 * math.pi)).sum(-1)
        return log_lik - 0.5 * (math.log(2 * math.pi) + self.GRID[None] ** 2)

    def exact_log_px(self, x):
        dz = float(self.GRID[1] - self.GRID[0])
        return torch.logsumexp(self.log_joint_on_grid(x), dim=1) + math.log(dz)

    def encode(self, x):
        # Deterministic and costly (a 16,001-point grid per image): memoised for the last batch, which
        # the tests encode again for every repetition.
        cached = getattr(self, "_last_encoding", None)
        if cached is not None and cached[0].shape == x.shape and torch.equal(cached[0], x):
            return cached[1]
        log_joint = self.log_joint_on_grid(x)
        w = torch.softmax(log_joint, dim=1)
        mean = (w * self.GRID).sum(1, keepdim=True)
        std = ((w * (self.GRID - mean) ** 2).sum(1, keepdim=True)).sqrt()
        encoding = Encoding(mean=mean + 1.0 * std, logvar=2 * torch.log(2.0 * std))
        self._last_encoding = (x.clone(), encoding)
        return encoding


def sample_data(model, n, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 1, generator=g, dtype=torch.float64)
    with torch.no_grad():
        return model.decode(z) + model.config.gaussian_std * torch.randn(n, 1, 2, 2, generator=g, dtype=torch.float64)


def test_iw_nll_is_an_upper_bound_that_converges_to_the_exact_nll():
    model = OneDimensionalModel()
    x = sample_data(model, 24, seed=0)
    true_nll = float(-model.exact_log_px(x).mean())
    reps = 32
    gaps, stderr = {}, {}
    for k in (1, 10, 100, 1000):
        estimates = []
        for rep in range(reps):
            gen = torch.Generator().manual_seed(1000 * k + rep)
            # max_decode 2048 with 24 images: k = 1000 is drawn in 10 chunks, exercising the chunked logsumexp.
            res = importance_weighted_batch(model, x, k, gen, max_decode=2048)
            estimates.append(float(-res.log_px.mean()))
            if k == 1:
                # One sample: the IW estimate is a single-sample ELBO, whose expectation is recon + KL.
                estimates[-1] = (estimates[-1], float((res.recon + res.kl).mean()))
        if k == 1:
            single, decomposed = map(np.array, zip(*estimates))
            # recon here is the same single sample; KL analytic: equal in expectation, so close on average.
            assert abs(single.mean() - decomposed.mean()) < 4 * single.std() / math.sqrt(reps) + 0.05
            estimates = single
        estimates = np.array(estimates)
        gaps[k] = estimates.mean() - true_nll
        stderr[k] = estimates.std(ddof=1) / math.sqrt(reps)
    for k, gap in gaps.items():
        assert gap > -3 * stderr[k] - 1e-3, f"k={k}: IW-NLL below the true NLL by {-gap:.4f} nats"
    assert gaps[1] > 0.1, f"the test model should have an ELBO gap (got {gaps[1]:.4f})"
    assert gaps[1] > gaps[10] > gaps[100] - 3 * stderr[100]
    assert gaps[100] + 3 * stderr[100] > gaps[1000] - 3 * stderr[1000]
    assert gaps[1000] < 0.03 and gaps[1000] < gaps[1] / 10, gaps


def test_recon_plus_kl_matches_minus_elbo_in_expectation():
    # With many samples the averaged recon term + analytic KL is the ELBO; the k-sample IW bound is above it.
    model = OneDimensionalModel()
    x = sample_data(model, 16, seed=1)
    res = importance_weighted_batch(model, x, 4000, torch.Generator().manual_seed(0), max_decode=4096)
    neg_elbo = float((res.recon + res.kl).mean())
    true_nll = float(-model.exact_log_px(x).mean())
    iw = float(-res.log_px.mean())
    assert true_nll <= iw + 0.01 < neg_elbo
    # A direct Monte-Carlo ELBO for comparison.
    g = torch.Generator().manual_seed(5)
    enc = model.encode(x)
    std = torch.exp(0.5 * enc.logvar)
    z = enc.mean + std * torch.randn(20000, *enc.mean.shape, generator=g, dtype=torch.float64)
    log_q = -0.5 * (math.log(2 * math.pi) + enc.logvar + ((z - enc.mean) / std) ** 2)
    log_p = -0.5 * (math.log(2 * math.pi) + z ** 2)
    ll = torch.stack([log_px_given_z(model, x, model.decode(zi)) for zi in z[:2000]])
    mc_neg_elbo = float(-(ll.mean(0) + (log_p - log_q).mean(0).squeeze(1)).mean())
    assert neg_elbo == pytest.approx(mc_neg_elbo, abs=0.05)


def test_likelihood_helpers_on_known_cases():
    cfg_model = OneDimensionalModel(sigma=0.5)
    x = torch.full((1, 1, 2, 2), 0.25, dtype=torch.float64)
    mean = torch.zeros_like(x)
    expected = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 0.5).log_prob(
        torch.tensor(0.25, dtype=torch.float64)) * 4
    assert float(log_px_given_z(cfg_model, x, mean)) == pytest.approx(float(expected), rel=1e-12)
    # A uniform density on [0, 1]^D has NLL 0: on the 8-bit scale that is exactly 8 bits per dimension.
    assert bits_per_dim(0.0, 784) == pytest.approx(8.0)
    assert bits_per_dim(-784 * math.log(2.0), 784) == pytest.approx(7.0)
    assert psnr_from_mse(0.01) == pytest.approx(20.0)
    means = np.zeros((100, 3))
    means[:, 0] = np.linspace(-1, 1, 100)             # variance 0.34: active
    means[:, 1] = np.linspace(-0.1, 0.1, 100)         # variance 0.0034: inactive
    assert active_units(means) == 1
    usage = codebook_usage(np.arange(8).repeat(5), 16)
    assert usage["perplexity"] == pytest.approx(8.0) and usage["codes_used"] == 0.5
    assert codebook_usage(np.zeros(10, int), 4)["perplexity"] == pytest.approx(1.0)


def test_shape_iou_on_known_masks():
    from training.evaluate import HeldOutAccumulator, shape_iou_summary

    x = torch.zeros(4, 1, 8, 8)
    x[:, :, 2:6, 2:6] = 1.0                              # a 4x4 square, 16 pixels
    recon = torch.zeros(4, 1, 8, 8)
    recon[0, :, 2:6, 2:6] = 0.9                          # the same square: IoU 1
    recon[1, :, 2:6, 2:4] = 0.6                          # its left half: 8 / 16
    recon[2, :, 2:6, 4:8] = 0.7                          # shifted by 2 px: 8 / 24
    recon[3, :, 2:6, 2:6] = 0.5                          # exactly at the threshold counts as off: 0 / 16
    acc = HeldOutAccumulator()
    acc.add_shape_iou(x, recon, np.array([0, 0, 1, 1]))
    acc.add_shape_iou(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), np.array([2]))  # empty and empty: 1
    summary = shape_iou_summary(acc, ["square", "ellipse", "heart"])
    assert summary["by_shape"] == pytest.approx({"square": 0.75, "ellipse": (8 / 24) / 2, "heart": 1.0})
    assert summary["count"] == {"square": 2, "ellipse": 2, "heart": 1} and summary["n"] == 5
    assert summary["worst"] == pytest.approx(1 / 6) and summary["threshold"] == 0.5


# ---- real tiny runs ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def evaluated_vae(tmp_path_factory):
    path = copy_run("vae-mnist", str(tmp_path_factory.mktemp("evaluate") / "vae"))
    return path, evaluate_run(path, k=20, n_test=150, seed=1)


def test_metrics_json_of_a_vae(evaluated_vae):
    path, result = evaluated_vae
    on_disk = json.loads(open(os.path.join(path, "metrics.json")).read())
    assert on_disk == result
    assert result["format_version"] == 1 and result["split"] == "test" and result["n_test"] == 150
    assert result["step"] == 60 and result["iw_k"] == 20 and result["seed"] == 1
    assert set(result["versions"]) >= {"torch", "sklearn", "numpy"}
    assert result["elbo"] == pytest.approx(-(result["recon"] + result["kl"]))
    # The k-sample bound is tighter than the ELBO (k = 20 on 150 images: by far more than the noise).
    assert 0 < result["iw_nll"] < -result["elbo"]
    assert len(result["kl_per_dim"]) == 4 and sum(result["kl_per_dim"]) == pytest.approx(result["kl"], rel=1e-4)
    assert 0 <= result["active_units"] <= 4 and result["latent_size"] == 4
    assert 0 < result["mse"] < 0.25 and result["psnr"] == pytest.approx(10 * math.log10(1 / result["mse"]))
    assert result["bits_per_dim"] is None                  # Bernoulli likelihood: nats, no bits/dim
    assert result["vq"] is None and result["disentanglement"] is None and result["shape_iou"] is None
    assert any("no ground-truth factors" in note for note in result["notes"])


def test_evaluation_is_seeded(evaluated_vae):
    path, result = evaluated_vae
    again = evaluate_run(path, k=20, n_test=150, seed=1, write=False)
    assert again["iw_nll"] == result["iw_nll"] and again["elbo"] == result["elbo"]
    other = evaluate_run(path, k=20, n_test=150, seed=2, write=False)
    assert other["iw_nll"] != result["iw_nll"]


def test_gaussian_likelihood_reports_bits_per_dim():
    result = evaluate_run(tiny_run("vae-gaussian-mnist"), k=5, n_test=60, write=False)
    d = 28 * 28
    assert result["bits_per_dim"] == pytest.approx((result["iw_nll"] + d * math.log(256)) / (d * math.log(2)))
    assert result["bits_per_dim_from"] == "iw_nll"


def test_vq_vae_reports_codebook_usage_and_no_elbo(tmp_path):
    result = evaluate_run(tiny_run("vq-mnist"), k=100, n_test=80, write=False)
    assert result["elbo"] is None and result["iw_nll"] is None and result["kl"] is None
    assert 1.0 <= result["vq"]["perplexity"] <= 16 and 0 < result["vq"]["codes_used"] <= 1
    assert result["recon"] > 0 and result["mse"] > 0
    assert any("VQ-VAE: no ELBO" in note for note in result["notes"])


def test_side_by_side_table_has_a_column_per_run():
    a = {"run": "vae", "model": "vae", "elbo": -90.5, "iw_nll": 88.25, "disentanglement": {"mig": 0.1}}
    b = {"run": "btc", "model": "btcvae", "elbo": -95.0, "iw_nll": 91.0, "disentanglement": {"mig": 0.3}}
    lines = format_table([a, b]).splitlines()
    assert lines[0].split() == ["metric", "vae", "btc"]
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip()) for line in lines[2:])}
    assert rows["ELBO (nats)"] == ["-90.5", "-95"] and rows["MIG"] == ["0.1", "0.3"]
    assert "PSNR (dB)" not in rows                         # rows empty for every run are left out


def test_cli_evaluates_several_runs_into_one_table(tmp_path, capsys):
    from training.cli import main

    runs = [copy_run(kind, str(tmp_path / kind)) for kind in ("vae-mnist", "vq-mnist")]
    assert main(["evaluate", *runs, "--k", "3", "--n-test", "20", "--no-disentanglement"]) == 0
    printed = capsys.readouterr().out
    assert all(os.path.isfile(os.path.join(r, "metrics.json")) for r in runs)
    header = next(line for line in printed.splitlines() if line.startswith("metric "))
    assert header.split() == ["metric", "vae-mnist", "vq-mnist"]
    # --from-saved prints the same table from the files, without evaluating.
    assert main(["evaluate", *runs, "--from-saved"]) == 0
    again = capsys.readouterr().out
    table = printed[printed.index("metric "):printed.index("note")]
    assert table in again


# ---- bad input (CLI: exit 2, one line) ---------------------------------------------------------------------------
def test_evaluating_a_folder_without_weights_is_a_one_line_error(tmp_path):
    path = copy_run("vae-mnist", str(tmp_path / "run"))
    os.remove(os.path.join(path, "model.safetensors"))
    assert_one_line_user_error(python_m_training("evaluate", path), "model.safetensors")
    assert not os.path.exists(os.path.join(path, "metrics.json"))


def test_disentanglement_on_a_dataset_without_factors_is_a_one_line_error(tmp_path):
    path = copy_run("vae-mnist", str(tmp_path / "run"))
    result = python_m_training("evaluate", path, "--disentanglement", "--k", "2", "--n-test", "10")
    assert_one_line_user_error(result, "dataset mnist has no ground-truth factors")
    assert not os.path.exists(os.path.join(path, "metrics.json"))


# ---- VAE vs β-TCVAE on dSprites, side by side -------------------------------------------------------------------
@pytest.mark.slow
def test_dsprites_vae_and_btcvae_side_by_side(tmp_path):
    started = time.time()
    runs = [copy_run(kind, str(tmp_path / kind)) for kind in ("vae-dsprites", "btcvae-dsprites")]
    result = python_m_training("evaluate", *runs, "--k", "10", "--n-test", "200", "--metric-scale", "0.02",
                               timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("metric "))
    table = [re.split(r"\s{2,}", line.strip()) for line in lines[start:] if line.strip()
             and not line.startswith(("note", "wrote"))]
    assert table[0] == ["metric", "vae-dsprites", "btcvae-dsprites"]
    rows = {cells[0]: cells[1:] for cells in table[2:]}
    assert rows["model"] == ["vae", "btcvae"]
    for label in ("MIG", "FactorVAE score", "DCI disentanglement", "DCI completeness", "DCI informativeness",
                  "BetaVAE score", "ELBO (nats)", "IW-NLL (nats)", "active units"):
        assert len(rows[label]) == 2 and "-" not in rows[label], label
    for path in runs:
        metrics = json.loads(open(os.path.join(path, "metrics.json")).read())
        dis = metrics["disentanglement"]
        for score in (dis["mig"], dis["factorvae"], dis["betavae"], *dis["dci"].values()):
            assert 0.0 <= score <= 1.0
        assert dis["settings"]["scale"] == 0.02 and dis["settings"]["reduced"] is True
        assert dis["settings"]["counts"]["dci"]["num_train"] == 200
        assert "scikit-learn" in dis["settings"]["versions"] and metrics["versions"]["sklearn"]
        assert dis["settings"]["factor_names"] == ["shape", "scale", "orientation", "posX", "posY"]
        assert metrics["iw_nll"] < -metrics["elbo"]
    print(f"dSprites VAE vs β-TCVAE: trained and evaluated in {time.time() - started:.0f} s")


def test_metrics_subset_computes_only_those_and_says_which_were_skipped(tmp_path):
    from training.evaluate import evaluate_run

    path = copy_run("vae-dsprites", str(tmp_path / "run"))
    result = evaluate_run(path, k=0, n_test=20, metric_scale=0.01, metrics="mig,factorvae", write=False)
    dis = result["disentanglement"]
    assert 0.0 <= dis["mig"] <= 1.0 and 0.0 <= dis["factorvae"] <= 1.0
    assert dis["dci"] is None and dis["betavae"] is None
    # dSprites: reconstruction IoU per shape over the 20 test images.
    iou = result["shape_iou"]
    assert set(iou["by_shape"]) <= {"square", "ellipse", "heart"} and sum(iou["count"].values()) == 20 == iou["n"]
    assert all(0.0 <= v <= 1.0 for v in iou["by_shape"].values()) and iou["worst"] == min(iou["by_shape"].values())
    assert dis["settings"]["skipped"] == ["dci", "betavae"]
    assert not os.path.exists(os.path.join(path, "metrics.json"))  # write=False


def test_unknown_metric_name_is_a_one_line_error(tmp_path):
    path = copy_run("vae-dsprites", str(tmp_path / "run"))
    result = python_m_training("evaluate", path, "--metrics", "mig,sap", "--k", "0", "--n-test", "10")
    assert_one_line_user_error(result, "unknown metric(s) sap")
    assert not os.path.exists(os.path.join(path, "metrics.json"))


def test_extra_seeds_repeat_mig_and_factorvae_and_record_their_mean(tmp_path):
    from training.evaluate import evaluate_run
    from training.runfolder import read_metrics

    path = copy_run("vae-dsprites", str(tmp_path / "run"))
    result = python_m_training("evaluate", path, "--k", "0", "--n-test", "20", "--metric-scale", "0.01",
                               "--metrics", "mig,factorvae", "--seed", "3", "--extra-seeds", "5,4")
    assert result.returncode == 0, result.stderr
    metrics = read_metrics(path)
    seeds = metrics.doc["disentanglement_seeds"]
    assert seeds["seeds"] == [3, 5, 4]
    # The first seed's values are the full result's; each extra seed matches a separate evaluation with it.
    assert seeds["mig"][0] == metrics.doc["disentanglement"]["mig"]
    alone = evaluate_run(path, k=0, n_test=20, metric_scale=0.01, metrics="mig,factorvae", seed=4, write=False)
    assert seeds["mig"][2] == alone["disentanglement"]["mig"]
    assert seeds["factorvae"][2] == alone["disentanglement"]["factorvae"]
    for name in ("mig", "factorvae"):
        assert len(seeds[name]) == 3 and abs(seeds["mean"][name] - np.mean(seeds[name])) < 1e-12
    assert metrics.score("mig_seed_mean") == seeds["mean"]["mig"]


@pytest.mark.parametrize("flags, message", [
    (["--extra-seeds", "1,x"], "comma-separated non-negative integers"),
    (["--extra-seeds", "0,1"], "must differ"),
    (["--extra-seeds", "1,1"], "must differ"),
    (["--extra-seeds", "1", "--metrics", "mig"], "needs both"),
    (["--extra-seeds", "1", "--no-disentanglement"], "needs both"),
])
def test_bad_extra_seeds_are_one_line_errors(tmp_path, flags, message):
    path = copy_run("vae-dsprites", str(tmp_path / "run"))
    result = python_m_training("evaluate", path, "--k", "0", "--n-test", "10", *flags)
    assert_one_line_user_error(result, message)
    assert not os.path.exists(os.path.join(path, "metrics.json"))
