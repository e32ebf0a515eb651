"""The static site (`python -m explorer site`): its files, its refusals, and the page itself in headless Chromium,
served by a plain threaded http.server on 127.0.0.1 with every other host blocked (so it works offline). The
page's interpolation canvas is checked against the run's torch decoder on the lerp of two exported means.

The browser part needs Debian's chromium (/usr/bin/chromium) and the playwright Python package; it is skipped
without them. The bundled runs carry decoder.onnx and latents.npz, so nothing is trained here.
"""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import types
import urllib.parse

import numpy as np
import pytest
import torch

from explorer.site import MAX_FILE_BYTES, STATIC, build_site, points_kept, site_files, site_samples
from helpers_app import torch_threads
from training.errors import UserError
from training.onnx_decoder import decoder_weight_storage
from training.models.base import Encoding
from training.runfolder import load_latents, load_run

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VAE_RUN = os.path.join(REPO_ROOT, "assets", "dsprites-vae")
VQ_RUN = os.path.join(REPO_ROOT, "assets", "mnist-vqvae")
N_POINTS = 300
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
# The canvas holds 8-bit pixels (half a level of rounding), decoded from the run's decoder.onnx, whose layer
# weights are stored as float16 (within 2.3e-3 of torch on these two runs: docs/run-format.md).
TOLERANCE = 2 / 255 + 1e-6


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("site") / "out")
    with torch_threads(1):
        runs = build_site([VAE_RUN, VQ_RUN], out, max_points=N_POINTS)
    return out, runs


# ---- the files ------------------------------------------------------------------------------------------------
def test_layout_and_sizes(site):
    out, runs = site
    files = site_files(out)
    for name in ("index.html", "site.js", "site.css", "latent_decoder.js", "runs.json", "README.md",
                 "vendor/onnxruntime-web/ort.wasm.bundle.min.mjs",
                 "vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm.gz", "vendor/onnxruntime-web/LICENSE",
                 "vendor/onnxruntime-web/ThirdPartyNotices.txt"):
        assert name in files
    # The brotli twin of the wasm is the Gradio app's alone: a static host would send it without
    # Content-Encoding: br, and the page inflates only gzip.
    assert os.path.isfile(os.path.join(STATIC, "vendor", "onnxruntime-web", "ort-wasm-simd-threaded.wasm.br"))
    assert not [name for name in files if name.endswith(".br")]
    for run in ("dsprites-vae", "mnist-vqvae"):
        for name in ("index.json", "mu.bin", "xy.bin", "labels.bin", "thumbs.png", "decoder.onnx"):
            assert f"runs/{run}/{name}" in files
        # The page below decodes with the bundled float16-weight decoder: onnxruntime-web must take that file too.
        with open(os.path.join(out, "runs", run, "decoder.onnx"), "rb") as f:
            assert decoder_weight_storage(f.read()) == "float16"
    assert max(files.values()) < MAX_FILE_BYTES
    assert [r.n_points for r in runs] == [N_POINTS, N_POINTS]
    readme = open(os.path.join(out, "README.md"), encoding="utf-8").read()
    assert readme.startswith("---\n") and "\nsdk: static\n" in readme and "\napp_file: index.html\n" in readme
    assert not [n for n in os.listdir(os.path.dirname(out)) if n.startswith(".")]  # no temp folder left


def test_run_index_matches_the_run_folder(site):
    out, _ = site
    index = json.load(open(os.path.join(out, "runs", "dsprites-vae", "index.json"), encoding="utf-8"))
    lat = load_latents(VAE_RUN)
    n, d = N_POINTS, lat["mu"].shape[1]
    assert (index["n_points"], index["n_exported"], index["latent_dim"]) == (n, lat["mu"].shape[0], d)
    mu = np.fromfile(os.path.join(out, "runs", "dsprites-vae", "mu.bin"), dtype="<f4").reshape(n, d)
    xy = np.fromfile(os.path.join(out, "runs", "dsprites-vae", "xy.bin"), dtype="<f4").reshape(n, 2)
    assert np.array_equal(mu, lat["mu"][:n]) and np.array_equal(xy, lat["xy"][:n])
    assert index["labels"]["names"] == [str(s) for s in lat["label_names"]]
    assert index["samples"] == "gaussian" and len(index["live_dims"]) == 8
    assert index["live_dims"][0] == int(np.argmax(lat["kl_per_dim"]))
    attrs = json.load(open(os.path.join(VAE_RUN, "attributes.json"), encoding="utf-8"))["attributes"]
    for name, entry in attrs.items():
        assert index["attributes"][name]["vector"] == entry["vector"]
        assert index["attributes"][name]["corrected"]["vector"] == entry["corrected"]["vector"]
    vq = json.load(open(os.path.join(out, "runs", "mnist-vqvae", "index.json"), encoding="utf-8"))
    assert vq["samples"] is None and vq["live_dims"] == [] and vq["is_vq"]


def test_wide_latents_keep_fewer_points():
    # A VQ-VAE's 784 numbers per point: 10,000 of them would make a 31 MB mu.bin.
    assert points_kept(types.SimpleNamespace(n_points=5000, latent_dim=784), 10_000) == 2551
    assert points_kept(types.SimpleNamespace(n_points=5000, latent_dim=10), 10_000) == 5000


@pytest.mark.parametrize("model, has_prior, kind", [("vae", True, "gaussian"), ("btcvae", True, "gaussian"),
                                                    ("ae", True, "ae"), ("vqvae", True, None)])
def test_prior_samples_offered(model, has_prior, kind):
    run = types.SimpleNamespace(config=types.SimpleNamespace(model=types.SimpleNamespace(name=model)),
                                has_prior=has_prior)
    offered, note = site_samples(run)
    assert offered == kind and note
    if model == "ae":
        assert "poor samples" in note  # offered with the app's warning


# ---- bad input ------------------------------------------------------------------------------------------------
def partial_run(tmp_path, leave_out: str) -> str:
    run = tmp_path / f"without-{leave_out}"
    run.mkdir()
    for name in ("config.json", "model.safetensors", "latents.npz", "attributes.json", "decoder.onnx"):
        if name != leave_out:
            shutil.copy(os.path.join(VAE_RUN, name), run / name)
    return str(run)


@pytest.mark.parametrize("case, message", [
    ("not-a-run", "not a run folder"),
    ("no-latents", "no latents.npz"),
    ("no-decoder", "python -m training export"),
    ("unknown", "unknown run"),
    ("out-not-empty", "not an empty folder"),
])
def test_bad_input_writes_nothing(tmp_path, case, message):
    out = tmp_path / "site"
    run = VAE_RUN
    if case == "not-a-run":
        run = str(tmp_path / "folder")
        os.makedirs(run)
        (tmp_path / "folder" / "notes.txt").write_text("hello")
    elif case == "no-latents":
        run = partial_run(tmp_path, "latents.npz")
    elif case == "no-decoder":
        run = partial_run(tmp_path, "decoder.onnx")
    elif case == "unknown":
        run = "no-such-run-anywhere"
    elif case == "out-not-empty":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(UserError) as error:
        build_site([run], str(out), max_points=50)
    assert message in str(error.value) and "\n" not in str(error.value)
    if case == "no-decoder":
        assert "--decoder-only" in str(error.value)
    assert sorted(os.listdir(tmp_path)) == before  # no site, no temp folder
    if case == "out-not-empty":
        assert os.listdir(out) == ["keep.txt"]


def test_cli_error_is_one_line(tmp_path):
    out = tmp_path / "site"
    result = subprocess.run([sys.executable, "-m", "explorer", "site", str(tmp_path / "missing"), "--out", str(out)],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown run") and result.stderr.count("\n") == 1, result.stderr
    assert not out.exists()


# ---- the page in a browser -------------------------------------------------------------------------------------
class QuietHandler(http.server.SimpleHTTPRequestHandler):
    # What `python -m http.server` serves, plus the module type for .mjs, which Python before 3.12 knows only
    # from a system mime.types.
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript"}

    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def page(site):
    playwright_sync = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is missing")
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    out, _ = site
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=out))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    host = urllib.parse.urlsplit(url).netloc
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        pg = context.new_page()
        pg.blocked, pg.errors, pg.requested = [], [], []
        pg.on("request", lambda r: pg.requested.append(r.url))

        def route(r):
            if urllib.parse.urlsplit(r.request.url).netloc == host:
                r.continue_()
            else:
                pg.blocked.append(r.request.url)
                r.abort()

        context.route("**/*", route)
        pg.on("pageerror", lambda e: pg.errors.append(f"page error: {e}"))
        pg.on("console", lambda m: pg.errors.append(f"console: {m.text}") if m.type == "error" else None)
        pg.goto(url + "index.html")
        pg.wait_for_function("document.body.dataset.run === 'runs/dsprites-vae/'", timeout=30_000)
        yield pg
        browser.close()
    server.shutdown()
    server.server_close()


def torch_image(run_dir: str, z: np.ndarray) -> np.ndarray:
    """The run's torch decoder on one flattened latent: (H, W, C) in [0, 1]."""
    run = load_run(run_dir)
    with torch.no_grad():
        latent = run.model.latent_for_decode(Encoding(mean=torch.from_numpy(z).reshape(1, *run.model.latent_shape)))
        return run.model.decode_image(latent)[0].permute(1, 2, 0).numpy()


def canvas_pixels(page, canvas_id: str) -> np.ndarray:
    got = page.evaluate("""(id) => {
      const c = document.getElementById(id);
      return {w: c.width, h: c.height, data: Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)};
    }""", canvas_id)
    return np.array(got["data"], dtype=np.uint8).reshape(got["h"], got["w"], 4)


def check_canvas(page, canvas_id: str, run_dir: str, z: np.ndarray) -> None:
    """The canvas shows torch's image of z, upscaled by nearest neighbour, within TOLERANCE per channel."""
    expected = torch_image(run_dir, z.astype(np.float32))
    rgba = canvas_pixels(page, canvas_id)
    scale = rgba.shape[0] // expected.shape[0]
    assert scale >= 1 and rgba.shape[:2] == (expected.shape[0] * scale, expected.shape[1] * scale)
    if expected.shape[2] == 1:
        expected = np.repeat(expected, 3, axis=2)
    expected = expected.repeat(scale, axis=0).repeat(scale, axis=1)
    error = np.abs(rgba[..., :3] / 255.0 - expected).max()
    assert error <= TOLERANCE, f"{canvas_id} differs from torch by {error * 255:.2f}/255"
    assert expected.max() - expected.min() > 0.5  # a real picture, not a flat one


def click_point(page, i: int, shift: bool = False) -> int:
    """Click on point i of the map; returns the point the page picked (the nearest one to the click)."""
    x, y = page.evaluate("(i) => [window.site.map.x[i], window.site.map.y[i]]", i)
    page.locator("#map").click(position={"x": x, "y": y}, modifiers=["Shift"] if shift else [])
    return page.evaluate("(b) => b ? window.site.pick.b : window.site.pick.a", shift)


def wait_for_key(page, canvas_id: str, key: str) -> None:
    page.wait_for_function("([id, key]) => document.getElementById(id).dataset.key === key", arg=[canvas_id, key],
                           timeout=10_000)


def test_the_runtime_downloads_once_with_the_page(page):
    # index.html preloads the runtime; site.js asks for the same URLs, so the browser takes the preloads over.
    for name in ("ort-wasm-simd-threaded.wasm.gz", "ort.wasm.bundle.min.mjs"):
        assert sum(url.endswith("/" + name) for url in page.requested) == 1, (name, page.requested)


def test_page_decodes_what_torch_decodes(page):
    mu = load_latents(VAE_RUN)["mu"]
    a, b = click_point(page, 17), click_point(page, 250, shift=True)
    assert a != b
    box = page.locator("#t").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + 2, y)
    page.mouse.down()
    seen = []
    for fraction in (0.2, 0.55, 0.9):
        page.mouse.move(box["x"] + fraction * box["width"], y, steps=4)
        t = page.eval_on_selector("#t", "el => el.value")
        seen.append(float(t))
        wait_for_key(page, "interp", f"runs/dsprites-vae/|{a}|{b}|lerp|{t}")
        z = (1 - float(t)) * mu[a].astype(np.float64) + float(t) * mu[b].astype(np.float64)
        check_canvas(page, "interp", VAE_RUN, z)
    page.mouse.up()
    assert seen == sorted(seen) and seen[0] < 0.3 and seen[-1] > 0.8, seen  # the drag moved the slider
    wait_for_key(page, "img-a", f"runs/dsprites-vae/|{a}")
    check_canvas(page, "img-a", VAE_RUN, mu[a])
    # Hovering a point shows its thumbnail from the sprite sheet.
    x, y = page.evaluate("(i) => [window.site.map.x[i], window.site.map.y[i]]", a)
    box = page.locator("#map").bounding_box()
    page.mouse.move(box["x"] + x, box["y"] + y)
    assert page.locator("#hover").is_visible()
    page.click("#sample")
    page.wait_for_function("document.querySelectorAll('#samples canvas[data-key]').length === 8", timeout=10_000)
    assert page.errors == [] and page.blocked == []


def test_run_picker_switches_runs(page):
    page.select_option("#run", label="mnist-vqvae")
    page.wait_for_function("document.body.dataset.run === 'runs/mnist-vqvae/'", timeout=30_000)
    mu = load_latents(VQ_RUN)["mu"]
    t = page.eval_on_selector("#t", "el => el.value")  # kept from the run before
    wait_for_key(page, "interp", f"runs/mnist-vqvae/|0|1|lerp|{t}")
    z = (1 - float(t)) * mu[0].astype(np.float64) + float(t) * mu[1].astype(np.float64)
    check_canvas(page, "interp", VQ_RUN, z)
    assert page.is_disabled("#sample")
    assert "VQ-VAE" in page.inner_text("#dims-note")
    assert page.errors == [] and page.blocked == []
