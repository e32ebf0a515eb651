"""The VQ-VAE's gated PixelCNN prior (training/prior.py): causality, training on a real tiny run, files."""
import json
import math
import os

import pytest
import torch

from helpers_eval import assert_one_line_user_error, copy_run, one_thread, python_m_training, tiny_run
from training.errors import UserError
from training.encoding import encode_split, open_dataset
from training.models.pixelcnn import GatedPixelCNN, PriorConfig
from training.prior import bits_per_code, train_prior
from training.runfolder import PRIOR_JSON_FILE, PRIOR_WEIGHTS_FILE, load_prior, load_run, save_prior


def positions(height, width):
    return [(i, j) for i in range(height) for j in range(width)]


def test_logits_at_p_and_before_do_not_depend_on_codes_at_p_or_after():
    torch.manual_seed(0)
    cfg = PriorConfig(num_codes=7, height=5, width=6, layers=5, channels=8)
    prior = GatedPixelCNN(cfg).eval()
    codes = torch.randint(0, 7, (2, 5, 6))
    with torch.no_grad():
        base = prior(codes)
        for p, (i, j) in enumerate(positions(5, 6)):
            changed = codes.clone()
            changed[:, i, j] = (changed[:, i, j] + 3) % 7
            diff = (prior(changed) - base).abs().amax(dim=(0, 1)).flatten()   # per raster position
            assert diff[:p + 1].max() < 1e-6, f"position {(i, j)} leaks into earlier logits"
            if j + 1 < 6:
                assert diff[p + 1] > 1e-4, f"the next position does not see {(i, j)}"
            if i + 1 < 5:
                assert diff[p + 6] > 1e-4, f"the position below does not see {(i, j)}"


def test_no_blind_spot_every_earlier_position_reaches_the_last_one():
    # The single-stack PixelCNN misses positions up and to the right; two stacks see the whole past.
    torch.manual_seed(1)
    cfg = PriorConfig(num_codes=5, height=4, width=5, layers=5, channels=8)
    prior = GatedPixelCNN(cfg).eval()
    codes = torch.randint(0, 5, (1, 4, 5))
    with torch.no_grad():
        base = prior(codes)[0, :, 3, 2]            # a position with columns to its right
        for i, j in positions(4, 5):
            if (i, j) >= (3, 2):
                break
            changed = codes.clone()
            changed[0, i, j] = (changed[0, i, j] + 1) % 5
            assert (prior(changed)[0, :, 3, 2] - base).abs().max() > 1e-5, f"blind spot at {(i, j)}"


def reference_sample(prior, n, generator, temperature=1.0):
    """The plain sampler: a full forward pass per position."""
    cfg = prior.config
    codes = torch.zeros((n, cfg.height, cfg.width), dtype=torch.long)
    for i, j in positions(cfg.height, cfg.width):
        probs = torch.softmax(prior(codes)[:, :, i, j].float() / temperature, dim=1)
        codes[:, i, j] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
    return codes


@pytest.mark.parametrize("layers,kernel_size", [(2, 3), (2, 5), (3, 3)])
def test_fast_sampler_draws_exactly_what_a_full_forward_per_position_draws(layers, kernel_size):
    # Grids larger than the context, so that the sampler's row and column crops are exercised.
    torch.manual_seed(layers + kernel_size)
    prior = GatedPixelCNN(PriorConfig(num_codes=6, height=8, width=11, layers=layers, channels=8,
                                      kernel_size=kernel_size)).double().eval()
    assert prior.context < 8
    for temperature in (1.0, 0.7):
        fast = prior.sample(6, torch.Generator().manual_seed(11), temperature)
        slow = reference_sample(prior, 6, torch.Generator().manual_seed(11), temperature)
        assert torch.equal(fast, slow)


def cropped_logits(prior, codes, i, j, context):
    """Logits at (i, j) computed the way the sampler does, from a window `context` rows / columns back."""
    top, left = max(0, i - context), max(0, j - context)
    links = [link[:, :, -1:, left:j + 1] for link in prior.vertical_links(codes[:, top:i + 1])]
    return prior.horizontal_logits(codes[:, i:i + 1, left:j + 1], links)[:, :, 0, -1]


@pytest.mark.parametrize("layers,kernel_size", [(2, 3), (3, 5)])
def test_sampler_context_is_exact_and_tight(layers, kernel_size):
    torch.manual_seed(0)
    prior = GatedPixelCNN(PriorConfig(num_codes=6, height=12, width=14, layers=layers, channels=8,
                                      kernel_size=kernel_size)).double().eval()
    codes = torch.randint(0, 6, (3, 12, 14))
    with torch.no_grad():
        full = prior(codes)
        i, j = 11, 13
        assert torch.allclose(cropped_logits(prior, codes, i, j, prior.context), full[:, :, i, j], atol=1e-12)
        # One row/column less and the crop's zero padding reaches (i, j): the bound is tight.
        assert not torch.allclose(cropped_logits(prior, codes, i, j, prior.context - 1), full[:, :, i, j],
                                  atol=1e-12)


def test_sampling_is_seeded_and_in_range():
    cfg = PriorConfig(num_codes=6, height=3, width=4, layers=2, channels=8)
    prior = GatedPixelCNN(cfg)
    a = prior.sample(5, torch.Generator().manual_seed(7))
    b = prior.sample(5, torch.Generator().manual_seed(7))
    assert a.shape == (5, 3, 4) and a.dtype == torch.int64
    assert torch.equal(a, b) and 0 <= int(a.min()) and int(a.max()) < 6
    assert prior.training  # sampling restores the mode it found
    with pytest.raises(UserError):
        prior.sample(1, temperature=0.0)


@pytest.fixture(scope="module")
def vq_run_with_prior(tmp_path_factory):
    path = copy_run("vq-mnist", str(tmp_path_factory.mktemp("vq") / "run"))
    with one_thread():
        summary = train_prior(path, steps=150, batch_size=32, layers=4, channels=16, n_train=1000, n_test=300,
                              seed=0, device="cpu", progress=False)
    return path, summary


def test_prior_beats_uniform_and_marginal_baselines_on_held_out_codes(vq_run_with_prior):
    path, summary = vq_run_with_prior
    assert summary["uniform_bits_per_code"] == pytest.approx(math.log2(16))
    assert summary["bits_per_code"] < summary["uniform_bits_per_code"] - 0.5
    # Better than code frequencies alone: the prior uses the spatial context.
    assert summary["bits_per_code"] < summary["marginal_bits_per_code"]
    on_disk = json.loads(open(os.path.join(path, PRIOR_JSON_FILE)).read())
    assert on_disk["bits_per_code"] == pytest.approx(summary["bits_per_code"])
    assert on_disk["config"] == {"num_codes": 16, "height": 7, "width": 7, "layers": 4, "channels": 16,
                                 "kernel_size": 3}
    assert on_disk["train"]["n_train_codes"] == 1000 and on_disk["train"]["n_test_codes"] == 300


def test_load_run_attaches_the_prior_and_samples_decode_to_images(vq_run_with_prior):
    path, summary = vq_run_with_prior
    run = load_run(path)
    assert run.model.has_prior and isinstance(run.prior, GatedPixelCNN)
    codes = run.prior.sample(4, torch.Generator().manual_seed(0))
    assert codes.shape == (4, 7, 7) and int(codes.max()) < 16
    with torch.no_grad():
        images = run.model.to_image(run.model.decode_codes(codes))
        sampled = run.model.decode_image(run.model.sample_prior(3, torch.Generator().manual_seed(1)))
    assert images.shape == (4, 1, 28, 28) and sampled.shape == (3, 1, 28, 28)
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    # The reloaded weights give exactly the held-out score that train-prior recorded (same test codes).
    test_codes = encode_split(run.model, open_dataset(run), "test", 300, seed=0).codes
    assert bits_per_code(run.prior, torch.from_numpy(test_codes)) == pytest.approx(summary["bits_per_code"], rel=1e-5)
    assert load_prior(path, run.model) is not run.prior     # a fresh copy, attached in its place
    assert run.model.has_prior


def test_a_prior_for_another_codebook_is_refused(vq_run_with_prior, tmp_path):
    path, _ = vq_run_with_prior
    other = copy_run("vq-mnist", str(tmp_path / "other"))
    wrong = GatedPixelCNN(PriorConfig(num_codes=32, height=7, width=7, layers=1, channels=4))
    save_prior(other, wrong, {"bits_per_code": None})
    with pytest.raises(UserError, match="32 codes"):
        load_run(other)


def test_train_prior_on_a_non_vq_run_is_a_one_line_error():
    result = python_m_training("train-prior", tiny_run("vae-mnist"), "--steps", "1")
    assert_one_line_user_error(result, "VQ-VAE")
    assert not os.path.exists(os.path.join(tiny_run("vae-mnist"), PRIOR_WEIGHTS_FILE))


def test_evaluate_reports_the_prior_score_of_a_vq_run(vq_run_with_prior):
    from training.evaluate import evaluate_run

    path, summary = vq_run_with_prior
    # Same 300 test images as train-prior's held-out codes (same seed): the same bits per code.
    result = evaluate_run(path, k=1, n_test=300, seed=0, write=False)
    vq = result["vq"]
    assert vq["prior_bits_per_code"] == pytest.approx(summary["bits_per_code"], rel=1e-5)
    grid = 7 * 7
    assert vq["nll_with_prior"] == pytest.approx(result["recon"] + vq["prior_bits_per_code"] * grid * math.log(2))
    assert result["elbo"] is None
