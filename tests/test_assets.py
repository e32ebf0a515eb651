"""The bundled runs in assets/: they load, their model card matches their metrics, they fit on a Space.

Fast (seconds): loads each shipped run once, decodes one small prior sample from each, parses
assets/README.md. No dataset and no network needed.
"""
from __future__ import annotations

import json
import math
import os
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, "assets")
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from assets_report import card_value, parse_card  # noqa: E402
from training.runfolder import Metrics, load_timeline  # noqa: E402

MB = 1024 * 1024
MAX_FILE_BYTES = 10 * MB   # Spaces refuse larger files without LFS
MAX_TOTAL_BYTES = 60 * MB
# Files the explorer needs in every bundled run (docs/run-format.md).
REQUIRED = ("config.json", "model.safetensors", "metrics.json", "latents.npz", "decoder.onnx", "DONE")
# The runs the explorer is meant to open with; a missing one must be a visible failure, not a silently smaller set.
EXPECTED_RUNS = ("mnist-vae", "mnist-ae", "dsprites-btcvae", "smileys-btcvae", "dsprites-vae", "mnist-vqvae")
# The runs whose training timeline the Training tab (and the lesson's steps on it) shows.
EXPECTED_TIMELINES = ("mnist-vae", "mnist-ae", "mnist-vqvae", "dsprites-vae", "smileys-btcvae")


def bundled_runs() -> list[str]:
    if not os.path.isdir(ASSETS):
        return []
    return sorted(n for n in os.listdir(ASSETS) if os.path.isfile(os.path.join(ASSETS, n, "config.json")))


RUNS = bundled_runs()


def read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def card() -> dict:
    with open(os.path.join(ASSETS, "README.md"), encoding="utf-8") as f:
        return parse_card(f.read())


@pytest.fixture(scope="module")
def registry():
    from explorer.runs import RunRegistry

    return RunRegistry([ASSETS])


def test_every_expected_run_is_bundled():
    missing = [name for name in EXPECTED_RUNS if name not in RUNS]
    assert not missing, f"assets/ lacks the bundled run(s) {missing}"


def test_sizes_fit_a_space():
    total = 0
    for folder, _, files in os.walk(ASSETS):
        for name in files:
            size = os.path.getsize(os.path.join(folder, name))
            total += size
            assert size < MAX_FILE_BYTES, f"{os.path.join(folder, name)} is {size / MB:.1f} MB (limit 10 MB)"
    assert total <= MAX_TOTAL_BYTES, f"assets/ holds {total / MB:.1f} MB (limit 60 MB)"


@pytest.mark.parametrize("name", RUNS)
def test_run_folder_is_complete_and_ships_no_resume_state(name):
    path = os.path.join(ASSETS, name)
    for required in REQUIRED:
        assert os.path.isfile(os.path.join(path, required)), f"{name}: no {required}"
    assert not os.path.exists(os.path.join(path, "checkpoint.pt")), f"{name}: ships its resume checkpoint"
    leftovers = [f for f in os.listdir(path) if ".tmp" in f]
    assert not leftovers, f"{name}: temporary files {leftovers}"
    config = read_json(os.path.join(path, "config.json"))
    if config["model"]["name"] == "vqvae":
        assert os.path.isfile(os.path.join(path, "prior.safetensors")), f"{name}: VQ-VAE without its prior"


@pytest.mark.parametrize("name", RUNS)
def test_metrics_match_the_model_card(name, card):
    assert name in card, f"assets/README.md has no `### {name}` section with a metrics table"
    rows = card[name]
    metrics = read_json(os.path.join(ASSETS, name, "metrics.json"))
    # A VQ-VAE has no ELBO (its "KL" is a constant): its headline is the codebook usage. An AE has no ELBO
    # either: its headline is the reconstruction and the quality of its decoded N(0, I) draws.
    model = read_json(os.path.join(ASSETS, name, "config.json"))["model"]["name"]
    headline = {"vqvae": {"step", "recon", "vq.perplexity"},
                "ae": {"step", "recon", "sample_quality.confident_share"}}.get(model, {"step", "elbo"})
    assert headline <= set(rows), f"{name}: the card's table lacks {sorted(headline)} ({sorted(rows)})"
    for path, shown in rows.items():
        value = card_value(Metrics(metrics), path)
        assert isinstance(value, (int, float)) and not isinstance(value, bool), \
            f"{name}: card shows `{path}` = {shown}, metrics.json has {value!r}"
        # The card prints floats to 4 decimals (benchmarks/assets_report.py).
        assert math.isclose(float(shown), float(value), abs_tol=5.01e-5), \
            f"{name}: card shows `{path}` = {shown}, metrics.json has {value}"
    # The weights the card describes are the weights shipped.
    assert int(open(os.path.join(ASSETS, name, "DONE")).read().strip()) == metrics["step"]


def test_card_lists_no_run_that_is_not_shipped(card):
    assert set(card) <= set(RUNS), f"the card describes runs that are not in assets/: {set(card) - set(RUNS)}"


@pytest.mark.parametrize("name", RUNS)
def test_registry_loads_run_and_prior_sample_decodes(name, registry):
    run = registry.get(name)
    assert not run.problems, f"{name}: {run.problems}"
    assert run.latents is not None and run.n_points >= 1000
    assert run.has_prior, f"{name}: no prior to sample (a VQ-VAE needs prior.safetensors)"
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        z = run.model.sample_prior(4, generator=generator)
        images = run.model.decode_image(z)
    size = run.config.model.image_size
    assert images.shape == (4, run.config.model.channels, size, size)
    assert torch.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    # A decoder that learned something does not paint a constant image for every sample.
    assert float(images.std()) > 0.01
    # The exported posterior means are this model's encodings of the exported thumbnails (export used the
    # shipped weights; thumbnails are full size for images up to 64 px).
    thumbs = torch.tensor(np.asarray(run.latents["thumbs"][:4]), dtype=torch.float32) / 255
    if thumbs.shape[-1] == size:
        with torch.no_grad():
            mu = run.model.encode(thumbs).mean.reshape(4, -1).numpy()
        assert np.allclose(mu, run.latents["mu"][:4], atol=1e-3), f"{name}: latents.npz is not from these weights"


def test_python_app_py_serves_the_bundled_runs_offline_without_a_writable_home(tmp_path):
    """`python app.py` as a Space or a fresh clone runs it: no arguments, HOME unwritable (/proc), no cache
    variables set, network requests routed to a dead proxy, temp files in a temp folder only."""
    import subprocess

    from gradio_client import Client
    from PIL import Image

    sys.path.insert(0, os.path.join(ROOT, "tests"))
    from helpers_app import free_port, stop_app, wait_for_http

    port = free_port()
    tmp = tmp_path / "tmp"
    cwd = tmp_path / "cwd"
    tmp.mkdir()
    cwd.mkdir()
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "MPLCONFIGDIR", "XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR",
                        "GRADIO_TEMP_DIR", "HF_HOME")}
    dead_proxy = "http://127.0.0.1:9"  # nothing listens there: any outside request fails at once
    env.update(HOME="/proc/no-home", TMPDIR=str(tmp), PYTHONPATH=ROOT, VAE_EXPLORER_THREADS="1",
               http_proxy=dead_proxy, https_proxy=dead_proxy, HTTP_PROXY=dead_proxy, HTTPS_PROXY=dead_proxy,
               no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost")
    log = open(tmp_path / "app.log", "w")
    app = subprocess.Popen([sys.executable, os.path.join(ROOT, "app.py"), "--port", str(port)], cwd=cwd,
                           env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_for_http(f"http://127.0.0.1:{port}/", timeout=120)
        except TimeoutError:
            pytest.fail("app.py did not answer:\n" + (tmp_path / "app.log").read_text()[-3000:])
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        for name in EXPECTED_RUNS:
            card = client.predict(name, api_name="/select_run")[0]
            assert name in card and "cannot" not in card.lower(), card[:500]
            grid = client.predict(name, 4, 0, 1.0, api_name="/sample")
            path = grid["value"] if isinstance(grid, dict) else grid
            with Image.open(path) as im:
                assert np.asarray(im).std() > 0, f"{name}: blank sample grid"
        assert app.poll() is None
    finally:
        stop_app(app)
        log.close()
    assert os.listdir(cwd) == [], "app.py wrote into its working directory"


@pytest.mark.parametrize("name", EXPECTED_TIMELINES)
def test_a_shipped_timeline_ends_at_the_shipped_weights(name, registry):
    run = registry.get(name)
    timeline = load_timeline(run.path)
    metrics = read_json(os.path.join(ASSETS, name, "metrics.json"))
    assert int(timeline["steps"][-1]) == metrics["step"], f"{name}: the timeline ends at another step"
    # Its last reconstructions are the shipped model's, up to the float16 rounding of the snapshot.
    inputs = torch.tensor(timeline["inputs"], dtype=torch.float32) / 255
    with torch.no_grad():
        shipped = (run.model.reconstruct(inputs) * 255).round().clamp(0, 255).numpy()
    assert np.abs(shipped - timeline["reconstructions"][-1]).max() <= 2, f"{name}: timeline not from these weights"
    if "code_counts" in timeline:
        # Measured over the exported test images with the float16 snapshot: metrics.json's codebook use
        # over the held-out images, nearly.
        assert timeline["perplexity"][-1] == pytest.approx(metrics["vq"]["perplexity"], rel=0.02)
        assert timeline["codes_used"][-1] == pytest.approx(metrics["vq"]["codes_used"], abs=1 / 64)
