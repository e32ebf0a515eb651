"""The model zoo: registry, shapes at every resolution, the seed architecture, the VQ codebook, overfitting."""
import importlib.util
import os

import pytest
import torch

from training.config import ModelConfig, model_config
from training.errors import UserError
from training.models import MODELS, LatentModel, build_model, model_names
from training.models.quantizer import VectorQuantizer, codebook_usage
from training.models.vqvae import NO_PRIOR_MESSAGE

SEED_BASELINE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "bench",
                             "seed_baseline.py")
EXPECTED_NAMES = ["ae", "vae", "vae-mlp", "resvae", "beta-vae", "annealed-vae", "btcvae", "vqvae"]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    # These models are tiny: a second intra-op thread does not help them, and on a shared, loaded
    # 2-core machine OpenMP threads that wait on each other make each step 20x slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


FAMILY_FIELDS = {"beta-vae": dict(beta=2.0), "btcvae": dict(beta=2.0),
                 "annealed-vae": dict(c_steps=100, c_max=5.0, gamma=10.0),
                 "vqvae": dict(num_codes=16, code_dim=4, vq_downsample=2)}


def tiny_config(name: str, image_size: int = 28, channels: int = 1, likelihood: str = "bernoulli",
                **overrides) -> ModelConfig:
    values = dict(name=name, image_size=image_size, channels=channels, likelihood=likelihood, latent_dim=4,
                  hidden=[8, 16], fc_dim=32, dataset_size=64)  # dataset_size: dropped where the model has none
    values.update(FAMILY_FIELDS.get(name, {}))
    values.update(overrides)
    return model_config(**values)


def square_images(n: int = 16, size: int = 28, channels: int = 1) -> torch.Tensor:
    """n images with one filled square each, at different positions and sizes (values 0/1)."""
    x = torch.zeros(n, channels, size, size)
    for i in range(n):
        side = 6 + (i % 3) * 3
        top, left = (i * 5) % (size - side), (i * 7) % (size - side)
        x[i, i % channels, top:top + side, left:left + side] = 1.0
    return x


def test_registry_names():
    assert model_names() == EXPECTED_NAMES
    assert set(MODELS) == set(EXPECTED_NAMES)


def test_unknown_model_name_is_a_user_error():
    with pytest.raises(UserError, match="unknown model 'gan'"):
        build_model(model_config(name="gan"))


@pytest.mark.parametrize("changes, message", [
    (dict(arch="transformer"), "arch"),
    (dict(name="vqvae", arch="mlp"), "arch"),
    (dict(likelihood="poisson"), "likelihood"),
    (dict(name="btcvae", tc_estimator="exact"), "unknown tc_estimator"),
    (dict(activation="gelu"), "activation"),
    (dict(kernel_size=5), "kernel_size"),
    (dict(image_size=8, hidden=[8, 8, 8, 8]), "too small"),
    (dict(name="vqvae", vq_downsample=3), "vq_downsample"),
    (dict(name="vae", beta=4.0), "model 'vae' has no field beta .*'beta-vae'"),
    (dict(name="beta-vae", beta=-1.0), "loss weights"),
    (dict(name="vqvae", num_codes=1), "num_codes"),
    (dict(hidden=[]), "hidden"),
])
def test_invalid_combinations_are_user_errors(changes, message):
    values = dict(name="vae", image_size=28, hidden=[8, 16])
    values.update(changes)
    with pytest.raises(UserError, match=message) as info:
        build_model(model_config(**values))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", EXPECTED_NAMES)
@pytest.mark.parametrize("image_size", [28, 32, 64])
def test_shapes_for_every_model(name, image_size):
    for channels, likelihood in [(1, "bernoulli"), (3, "gaussian")]:
        model = build_model(tiny_config(name, image_size, channels, likelihood))
        assert isinstance(model, LatentModel)
        x = square_images(4, image_size, channels)
        out = model.loss(x, step=3)
        assert out.loss.dim() == 0 and torch.isfinite(out.loss)
        assert {"recon", "kl"} <= set(out.terms)
        for value in out.terms.values():
            assert isinstance(value, float) or (value.dim() == 0 and not value.requires_grad)
        model.eval()
        enc = model.encode(x)
        assert enc.mean.shape == (4, *model.latent_shape)
        params = model.decode(model.latent_for_decode(enc))
        assert params.shape == x.shape
        recon = model.reconstruct(x)
        assert recon.shape == x.shape and recon.min() >= 0 and recon.max() <= 1
        if likelihood == "gaussian":   # Gaussian means live in the data range [0, 1]
            assert params.min() >= 0 and params.max() <= 1
        if model.has_prior:
            z = model.sample_prior(3, generator=torch.Generator().manual_seed(0))
            assert z.shape == (3, *model.latent_shape)
            assert model.decode_image(z).shape == (3, channels, image_size, image_size)


def test_model_specific_terms():
    x = square_images(8)
    terms = {name: build_model(tiny_config(name)).loss(x, step=50).terms for name in EXPECTED_NAMES}
    assert {"mi", "tc", "dwkl"} <= set(terms["btcvae"])
    assert float(terms["annealed-vae"]["capacity"]) == pytest.approx(2.5)   # c_max 5 over 100 steps, step 50
    assert {"vq", "perplexity", "codes_used"} <= set(terms["vqvae"])
    assert float(terms["ae"]["kl"]) == 0.0 and float(terms["vqvae"]["kl"]) == 0.0
    assert float(terms["vae"]["kl"]) > 0.0


def test_models_work_in_channels_last():
    torch.manual_seed(0)
    for name in ("vae", "resvae", "vqvae"):
        model = build_model(tiny_config(name, 32, 3, batch_norm=True)).eval()
        x = square_images(4, 32, 3)
        expected = model.reconstruct(x)
        model = model.to(memory_format=torch.channels_last)
        got = model.reconstruct(x.contiguous(memory_format=torch.channels_last))
        assert torch.allclose(got, expected, atol=1e-5)
        model.train()
        model.loss(x.contiguous(memory_format=torch.channels_last)).loss.backward()


def test_btcvae_without_dataset_size_is_a_user_error():
    model = build_model(tiny_config("btcvae", dataset_size=0))
    with pytest.raises(UserError, match="dataset_size"):
        model.loss(square_images(4))
    model.config.dataset_size = 1000   # the trainer fills it in after building: the model must see it
    assert torch.isfinite(model.loss(square_images(4)).loss)


def test_autoencoder_prior_samples_are_standard_normal_draws():
    model = build_model(tiny_config("ae", latent_dim=6))
    g = torch.Generator().manual_seed(7)
    z = model.sample_prior(4000, generator=g)
    assert z.shape == (4000, 6)
    assert abs(z.mean().item()) < 0.05 and abs(z.std().item() - 1.0) < 0.05
    assert model.encode(square_images(2)).logvar is None


def test_autocast_losses_are_finite():
    x = square_images(8)
    for name in ("btcvae", "vqvae"):
        model = build_model(tiny_config(name))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model.loss(x)
        assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)


# ---- the seed notebook's architecture --------------------------------------------------------------------
@pytest.mark.skipif(not os.path.isfile(SEED_BASELINE), reason="shared seed baseline not present")
def test_seed_architecture_is_reproduced_exactly():
    spec = importlib.util.spec_from_file_location("seed_baseline", SEED_BASELINE)
    seed_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seed_module)
    seed = seed_module.SeedVAE()
    cfg = model_config(name="vae", image_size=32, channels=1, latent_dim=200, hidden=[16, 32, 64, 128],
                      kernel_size=3, batch_norm=True, activation="leaky_relu", fc_dim=0, likelihood="gaussian")
    model = build_model(cfg)

    def count(m):
        return sum(p.numel() for p in m.parameters())

    def leaf_types(m):
        return [type(x).__name__ for x in m.modules() if not list(x.children()) and type(x).__name__ != "Identity"]

    assert count(model) == count(seed)
    assert [p.shape for p in model.parameters()] == [p.shape for p in seed.parameters()]
    assert leaf_types(model) == leaf_types(seed)
    # Same weights -> same function: copy the seed's parameters and buffers in order, compare outputs.
    with torch.no_grad():
        for mine, theirs in zip(model.parameters(), seed.parameters()):
            mine.copy_(theirs)
        for mine, theirs in zip(model.buffers(), seed.buffers()):
            mine.copy_(theirs)
    model.eval(), seed.eval()
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        h = torch.flatten(seed.encoder(x), 1)
        mu = seed.fc_mu(h)
        seed_out = seed.final(seed.decoder(seed.decoder_input(mu).view(-1, 128, 2, 2)))
        enc = model.encode(x)
        assert torch.allclose(enc.mean, mu, atol=1e-5)
        assert torch.allclose(enc.logvar, seed.fc_var(h), atol=1e-5)
        assert torch.allclose(model.decode(enc.mean), seed_out, atol=1e-5)
        # The trainer's layout (channels-last): same function.
        model.to(memory_format=torch.channels_last)
        enc = model.encode(x.contiguous(memory_format=torch.channels_last))
        assert torch.allclose(enc.mean, mu, atol=1e-5)
        assert torch.allclose(model.decode(enc.mean), seed_out, atol=1e-5)


# ---- VQ codebook ----------------------------------------------------------------------------------------
def test_vq_forward_returns_quantized_indices_and_commitment_loss():
    vq = VectorQuantizer(num_codes=2, code_dim=2, commitment=0.25).eval()
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    z = torch.tensor([[[1.0, 2.0, 9.0], [1.0, 0.0, 9.0]]], requires_grad=True)    # (B=1, D=2, 3 positions)
    quantized, indices, loss = vq(z)
    assert indices.tolist() == [[0, 0, 1]]
    assert torch.equal(quantized.detach(), torch.tensor([[[0.0, 0.0, 10.0], [0.0, 0.0, 10.0]]]))
    # 0.25 · (‖(1,1)‖² + ‖(2,0)‖² + ‖(−1,−1)‖²) / B = 0.25 · 8
    assert loss.item() == pytest.approx(2.0)
    # Straight-through: d(sum quantized)/dz = 1 everywhere.
    quantized.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


def test_vq_ema_update_worked_example():
    vq = VectorQuantizer(num_codes=2, code_dim=2, decay=0.5, eps=0.1, dead_code_threshold=0.0).train()
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    vq.cluster_size.copy_(torch.tensor([2.0, 0.5]))
    vq.embed_sum.copy_(torch.tensor([[0.0, 0.0], [5.0, 5.0]]))
    z = torch.tensor([[[1.0, 2.0, 9.0], [1.0, 0.0, 9.0]]])    # vectors (1,1), (2,0) -> code 0; (9,9) -> code 1
    vq(z)
    # counts n = (2, 1); sums s = ((3, 1), (9, 9))
    # N ← 0.5·(2, 0.5) + 0.5·(2, 1) = (2, 0.75);  m ← 0.5·((0,0), (5,5)) + 0.5·((3,1), (9,9)) = ((1.5, 0.5), (7, 7))
    assert vq.cluster_size.tolist() == pytest.approx([2.0, 0.75])
    assert vq.embed_sum.flatten().tolist() == pytest.approx([1.5, 0.5, 7.0, 7.0])
    # Laplace: Ñ = (N + 0.1) / (2.75 + 2·0.1) · 2.75 = (1.957627, 0.792373);  e = m / Ñ
    assert vq.codebook[0].tolist() == pytest.approx([0.766234, 0.255411], abs=1e-5)
    assert vq.codebook[1].tolist() == pytest.approx([8.834225, 8.834225], abs=1e-5)


def test_vq_eval_mode_changes_nothing():
    vq = VectorQuantizer(num_codes=4, code_dim=2).eval()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    vq(torch.randn(2, 2, 3, 3))
    assert all(torch.equal(before[k], v) for k, v in vq.state_dict().items())


def test_dead_code_is_restarted_from_an_encoder_output():
    torch.manual_seed(0)
    vq = VectorQuantizer(num_codes=3, code_dim=2, decay=0.9, dead_code_threshold=0.5).train()
    vq.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [100.0, -100.0]]))
    vq.cluster_size.copy_(torch.tensor([5.0, 5.0, 0.1]))            # code 2 is dead
    vq.embed_sum.copy_(vq.codebook * vq.cluster_size.unsqueeze(1))
    z = torch.tensor([[[1.0, 2.0, 9.0, 11.0], [1.0, 0.0, 9.0, 10.0]]])
    vq(z)
    outputs = [tuple(v) for v in z[0].t().tolist()]
    assert tuple(vq.codebook[2].tolist()) in outputs
    assert vq.cluster_size[2].item() == pytest.approx(vq.restart_size)
    assert vq.embed_sum[2].tolist() == pytest.approx((vq.codebook[2] * vq.restart_size).tolist())
    # Live codes are not touched by the restart.
    assert vq.cluster_size[:2].tolist() == pytest.approx([0.9 * 5 + 0.1 * 2, 0.9 * 5 + 0.1 * 2])


def test_codebook_usage():
    perplexity, used = codebook_usage(torch.tensor([[0, 1], [2, 3]]), 8)
    assert perplexity.item() == pytest.approx(4.0) and used.item() == pytest.approx(0.5)
    perplexity, used = codebook_usage(torch.zeros(5, dtype=torch.long), 8)
    assert perplexity.item() == pytest.approx(1.0) and used.item() == pytest.approx(1 / 8)


def test_vqvae_buffers_prior_and_code_decoding():
    model = build_model(tiny_config("vqvae"))
    state = model.state_dict()
    for name in ("quantizer.codebook", "quantizer.cluster_size", "quantizer.embed_sum"):
        assert name in state
    assert not model.has_prior
    with pytest.raises(UserError) as info:
        model.sample_prior(2)
    assert str(info.value) == NO_PRIOR_MESSAGE

    class UniformCodePrior:
        """The interface a learned prior provides (the PixelCNN): code indices (n, h, w)."""

        def sample(self, n, generator=None, temperature=1.0):
            return torch.randint(0, 16, (n, 7, 7), generator=generator)

    model.attach_prior(UniformCodePrior())
    assert model.has_prior and set(model.state_dict()) == set(state)
    z = model.sample_prior(3, generator=torch.Generator().manual_seed(0))
    assert z.shape == (3, 4, 7, 7)
    assert model.decode_image(z).shape == (3, 1, 28, 28)
    codes = model.encode(square_images(2)).codes
    assert codes.shape == (2, 7, 7) and codes.dtype == torch.long
    assert torch.allclose(model.decode_codes(codes), model.decode(model.quantizer.lookup(codes)))


def test_vqvae_first_training_step_spreads_the_codebook():
    torch.manual_seed(0)
    model = build_model(tiny_config("vqvae"))
    x = square_images(16)
    model.loss(x)                                      # restarts unused codes from encoder outputs
    terms = model.loss(x).terms
    assert float(terms["codes_used"]) > 0.5


# ---- every model can learn ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", EXPECTED_NAMES)
def test_overfitting_16_images_drives_the_loss_down(name):
    torch.manual_seed(0)
    model = build_model(tiny_config(name, dataset_size=16))
    x = square_images(16)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    initial = model.loss(x, step=0).loss.item()
    for step in range(150):
        loss = model.loss(x, step=step).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    final = sum(model.loss(x, step=150).loss.item() for _ in range(3)) / 3
    assert final < 0.6 * initial, (name, initial, final)
