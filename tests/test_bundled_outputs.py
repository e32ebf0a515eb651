"""The bundled runs decode fixed latents and reconstruct fixed images to recorded values.

The recording (tests/data/bundled_outputs.npz) holds, for every run in assets/: a few test images
(uint8), fixed latents, and what the model gave for both. A refactor of the model, its loading or its
layers must leave these numbers where they were (within 1e-5). Re-record only for a change that is
meant to alter the bundled models' outputs, and only for the runs it alters:

    python tests/test_bundled_outputs.py --record                    # every run
    python tests/test_bundled_outputs.py --record smileys-btcvae     # one run; the others keep their values
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from training.runfolder import load_run  # noqa: E402

ASSETS = os.path.join(REPO_ROOT, "assets")
RECORDING = os.path.join(REPO_ROOT, "tests", "data", "bundled_outputs.npz")
RUNS = ("dsprites-btcvae", "dsprites-vae", "mnist-ae", "mnist-vae", "mnist-vqvae", "smileys-btcvae")
N = 4
TOLERANCE = 1e-5


def fixed_latents(model, seed: int = 0) -> torch.Tensor:
    """Latents drawn once from a seeded generator; a VQ-VAE gets codebook vectors of seeded code indices."""
    generator = torch.Generator().manual_seed(seed)
    if hasattr(model, "quantizer"):
        _, h, w = model.latent_shape
        codes = torch.randint(0, model.quantizer.codebook.shape[0], (N, h, w), generator=generator)
        return model.quantizer.lookup(codes)
    return torch.randn((N, *model.latent_shape), generator=generator)


def outputs_of(run_name: str, images_u8: np.ndarray) -> dict:
    run = load_run(os.path.join(ASSETS, run_name))
    torch.manual_seed(0)
    with torch.no_grad():
        latents = fixed_latents(run.model)
        decoded = run.model.decode_image(latents)
        images = torch.from_numpy(images_u8).float() / 255.0
        reconstructed = run.model.reconstruct(images)
    return {"latents": latents.numpy(), "decoded": decoded.numpy(), "reconstructed": reconstructed.numpy()}


def record(names: tuple = RUNS) -> None:
    from training.data import load_dataset

    arrays = {}
    if set(names) != set(RUNS):
        with np.load(RECORDING) as old:
            arrays = {key: old[key] for key in old.files if key.split("/")[0] not in names}
    for name in names:
        run = load_run(os.path.join(ASSETS, name))
        data_cfg = run.config.data
        if data_cfg.name == "mnist":
            data_cfg.data_dir = os.path.join(REPO_ROOT, "..", "shared", "data")
        dataset = load_dataset(data_cfg)
        images, _ = dataset.get(dataset.test_indices[:N])
        images_u8 = images.numpy().astype(np.uint8)
        arrays[f"{name}/images"] = images_u8
        for key, value in outputs_of(name, images_u8).items():
            arrays[f"{name}/{key}"] = value
    np.savez_compressed(RECORDING, **arrays)
    print(f"wrote {RECORDING}")


@pytest.mark.parametrize("run_name", RUNS)
def test_bundled_run_outputs_match_the_recording(run_name):
    recording = np.load(RECORDING)
    outputs = outputs_of(run_name, recording[f"{run_name}/images"])
    for key in ("latents", "decoded", "reconstructed"):
        expected = recording[f"{run_name}/{key}"]
        assert outputs[key].shape == expected.shape, key
        difference = float(np.abs(outputs[key] - expected).max())
        assert difference <= TOLERANCE, f"{run_name} {key}: max difference {difference:.2e}"


if __name__ == "__main__":
    if sys.argv[1:2] != ["--record"] or not set(sys.argv[2:]) <= set(RUNS):
        raise SystemExit(f"usage: python tests/test_bundled_outputs.py --record [RUN ...] (runs: {', '.join(RUNS)})")
    record(tuple(sys.argv[2:]) or RUNS)
