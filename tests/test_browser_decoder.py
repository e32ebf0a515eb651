"""Decoding latents in the browser: explorer/static/latent_decoder.js with the vendored onnxruntime-web, in
headless Chromium, against torch. A tiny seeded decoder is exported to ONNX here and served with the page, the
runtime and the module by a plain HTTP server on 127.0.0.1; every request to another host is blocked, so this
also shows that the page works offline.

Needs Debian's chromium (/usr/bin/chromium), the playwright Python package and onnx; skipped without them.
"""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
import urllib.parse
import warnings

import numpy as np
import pytest

from helpers_app import torch_threads

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
STATIC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "explorer", "static")
VENDOR = os.path.join(STATIC, "vendor", "onnxruntime-web")
WASM = "ort-wasm-simd-threaded.wasm"

playwright_sync = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
pytest.importorskip("onnx", reason="torch.onnx.export needs the onnx package (requirements-dev.txt)")
if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

LATENT_DIM = 5
SCALE = 3
# Large enough that the sigmoid output covers most of [0, 1], not only its middle.
LATENTS = [[0.0] * LATENT_DIM, [2.0, -1.5, 0.5, 3.0, -2.5], [-3.0, 2.5, -0.5, 1.0, 1.5]]

PAGE = """<!doctype html>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<canvas id="canvas"></canvas>
<script type="module">
  import * as decoder from './latent_decoder.js';
  window.decoder = decoder;
</script>
"""

# The bare bundle, with no wasmBinary given: which wasm file does it ask the server for?
BARE_PAGE = """<!doctype html>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<script type="module">
  window.attempt = (async () => {
    const ort = await import('./vendor/onnxruntime-web/ort.wasm.bundle.min.mjs');
    ort.env.wasm.numThreads = 1;
    ort.env.wasm.proxy = false;
    try { await ort.InferenceSession.create('./rgb.onnx'); return 'loaded'; }
    catch (e) { return String(e.message || e); }
  })();
</script>
"""

DECODE = """async ({base, model, latents, scale}) => {
  const {loadRuntime, LatentDecoder, drawImage} = window.decoder;
  const t0 = performance.now();
  await loadRuntime(base);
  const t1 = performance.now();
  const decoder = await LatentDecoder.load(model);
  const t2 = performance.now();
  const canvas = document.getElementById('canvas');
  const images = [];
  for (const z of latents) {
    const image = await decoder.decode(new Float32Array(z));
    drawImage(canvas, image, scale);
    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    images.push({channels: image.channels, height: image.height, width: image.width, data: Array.from(image.data),
                 canvasWidth: canvas.width, canvasHeight: canvas.height, pixels: Array.from(pixels)});
  }
  return {latentDim: decoder.latentDim, runtimeMs: t1 - t0, sessionMs: t2 - t1, images};
}"""

TIME_FRAMES = """async ({model, frames, dim, scale}) => {
  const {LatentDecoder, drawImage} = window.decoder;
  const decoder = await LatentDecoder.load(model);
  const canvas = document.getElementById('canvas');
  const z = new Float32Array(dim);
  const times = [];
  for (let i = 0; i < frames; i++) {
    for (let k = 0; k < dim; k++) z[k] = 2 * Math.sin(0.1 * i + k);   // a new latent every frame, as a drag gives
    const start = performance.now();
    drawImage(canvas, await decoder.decode(z), scale);
    times.push(performance.now() - start);
  }
  return times;
}"""


def tiny_decoder(channels: int):
    """Linear -> reshape -> ConvTranspose2d -> Sigmoid: (1, LATENT_DIM) -> (1, channels, 16, 16), seeded."""
    import torch

    class TinyDecoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(LATENT_DIM, 8 * 8 * 8)
            self.up = torch.nn.ConvTranspose2d(8, channels, 4, stride=2, padding=1)

        def forward(self, z):
            return torch.sigmoid(self.up(self.fc(z).view(-1, 8, 8, 8)))

    torch.manual_seed(channels)
    model = TinyDecoder().eval()
    with torch.no_grad():
        model.fc.weight.mul_(3.0)
        model.up.weight.mul_(3.0)  # spreads the output over [0, 1], so the pixel check sees more than grey
    return model


def export_onnx(model, path: str) -> None:
    import torch

    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated, but it needs no onnxscript.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(1, LATENT_DIM),), path, input_names=["z"], output_names=["image"],
                          dynamic_axes={"z": {0: "batch"}, "image": {0: "batch"}}, dynamo=False, opset_version=17)


ENCODED_FOLDERS = {"encoded": "gzip", "brotli": "br"}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    # A module script needs a JavaScript MIME type; Python's table has none for .mjs before 3.12.
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".js": "text/javascript", ".wasm": "application/wasm", ".gz": "application/gzip"}

    def end_headers(self):
        # /encoded/ serves the same files, the .gz ones as a host that sends them with Content-Encoding: gzip
        # (the browser then inflates them before the page sees the bytes); /brotli/ answers the .gz URL with
        # the .br bytes and Content-Encoding: br, as the Gradio app does for a browser that takes br.
        if self.path.endswith(".gz"):
            for folder, coding in ENCODED_FOLDERS.items():
                if self.path.startswith(f"/{folder}/"):
                    self.send_header("Content-Encoding", coding)
        super().end_headers()

    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A folder with the test pages, the vendored runtime, latent_decoder.js and two decoders (RGB and grey),
    served on 127.0.0.1 at a random port. Yields (url, {channels: torch model})."""
    root = tmp_path_factory.mktemp("browser-decoder")
    shutil.copytree(VENDOR, root / "vendor" / "onnxruntime-web")
    os.symlink(root / "vendor", root / "encoded")
    brotli_runtime = root / "brotli" / "onnxruntime-web"
    brotli_runtime.mkdir(parents=True)
    module = "ort.wasm.bundle.min.mjs"
    os.symlink(root / "vendor" / "onnxruntime-web" / module, brotli_runtime / module)
    shutil.copy(os.path.join(VENDOR, f"{WASM}.br"), brotli_runtime / f"{WASM}.gz")
    shutil.copy(os.path.join(STATIC, "latent_decoder.js"), root / "latent_decoder.js")
    (root / "index.html").write_text(PAGE)
    (root / "bare.html").write_text(BARE_PAGE)
    models = {}
    with torch_threads(1):
        for channels, name in ((3, "rgb"), (1, "grey")):
            models[channels] = tiny_decoder(channels)
            export_onnx(models[channels], str(root / f"{name}.onnx"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", models
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, site):
    """A fresh page that may reach only the test server; it records what it requested, what was blocked, and
    every page error and console error."""
    url, _ = site
    host = urllib.parse.urlsplit(url).netloc
    context = browser.new_context()
    pg = context.new_page()
    pg.requested, pg.blocked, pg.errors = [], [], []

    def route(r):
        if urllib.parse.urlsplit(r.request.url).netloc == host:
            pg.requested.append(urllib.parse.urlsplit(r.request.url).path)
            r.continue_()
        else:
            pg.blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    pg.on("pageerror", lambda e: pg.errors.append(f"page error: {e}"))
    pg.on("console", lambda m: pg.errors.append(f"console: {m.text}") if m.type == "error" else None)
    yield pg
    context.close()


def open_page(page, url: str) -> None:
    page.goto(url + "index.html")
    page.wait_for_function("window.decoder !== undefined", timeout=10_000)


def expected_pixels(model, z) -> np.ndarray:
    """torch's image for z as an (H*SCALE, W*SCALE, 3) array in [0, 1], upscaled by nearest neighbour."""
    import torch

    with torch.no_grad():
        image = model(torch.tensor([z], dtype=torch.float32))[0].numpy()
    if image.shape[0] == 1:
        image = np.repeat(image, 3, axis=0)
    return image.transpose(1, 2, 0).repeat(SCALE, axis=0).repeat(SCALE, axis=1)


@pytest.mark.parametrize("channels, model", [(3, "rgb.onnx"), (1, "grey.onnx")])
def test_canvas_matches_torch(page, site, channels, model):
    url, models = site
    open_page(page, url)
    result = page.evaluate(DECODE, {"base": "vendor/onnxruntime-web/", "model": model, "latents": LATENTS,
                                    "scale": SCALE})
    print(f"\nruntime load {result['runtimeMs']:.0f} ms, session start {result['sessionMs']:.0f} ms")
    assert result["latentDim"] == LATENT_DIM
    covered = []
    for z, got in zip(LATENTS, result["images"]):
        assert (got["channels"], got["height"], got["width"]) == (channels, 16, 16)
        assert (got["canvasHeight"], got["canvasWidth"]) == (16 * SCALE, 16 * SCALE)
        expected = expected_pixels(models[channels], z)
        # The decoder's own output, before any drawing: float32 against float32.
        native = expected[::SCALE, ::SCALE, :channels].transpose(2, 0, 1).ravel()
        np.testing.assert_allclose(np.array(got["data"]), native, atol=1e-5)
        rgba = np.array(got["pixels"], dtype=np.uint8).reshape(16 * SCALE, 16 * SCALE, 4)
        assert (rgba[..., 3] == 255).all()
        error = np.abs(rgba[..., :3] / 255.0 - expected).max()
        assert error <= 1 / 255 + 1e-3, f"canvas differs from torch by {error:.4f} for z={z}"
        covered += [expected.min(), expected.max()]
    assert min(covered) < 0.05 and max(covered) > 0.95  # the check saw the whole range, not only mid-grey
    # Only our own files, the gzipped wasm once, and nothing from anywhere else.
    assert page.blocked == []
    assert page.errors == []
    assert f"/vendor/onnxruntime-web/{WASM}.gz" in page.requested
    assert set(page.requested) == {"/index.html", "/latent_decoder.js", f"/{model}",
                                   "/vendor/onnxruntime-web/ort.wasm.bundle.min.mjs",
                                   f"/vendor/onnxruntime-web/{WASM}.gz"}


@pytest.mark.parametrize("folder", sorted(ENCODED_FOLDERS))
def test_wasm_sent_content_encoded(page, site, folder):
    """A host that sends the wasm with Content-Encoding (gzip, or br in place of the .gz) hands the page inflated
    bytes: used as they are."""
    url, models = site
    open_page(page, url)
    result = page.evaluate(DECODE, {"base": f"{folder}/onnxruntime-web/", "model": "rgb.onnx", "latents": LATENTS[1:],
                                    "scale": 1})
    for z, got in zip(LATENTS[1:], result["images"]):
        rgba = np.array(got["pixels"], dtype=np.uint8).reshape(16, 16, 4)
        expected = expected_pixels(models[3], z)[::SCALE, ::SCALE]
        assert np.abs(rgba[..., :3] / 255.0 - expected).max() <= 1 / 255 + 1e-3
    assert f"/{folder}/onnxruntime-web/{WASM}.gz" in page.requested
    assert page.errors == [] and page.blocked == []


def test_bundle_asks_for_the_vendored_wasm_name(page, site):
    """Without wasmBinary the bundle fetches the raw wasm next to itself: the name the .gz is kept under."""
    url, _ = site
    page.goto(url + "bare.html")
    outcome = page.evaluate("window.attempt")
    assert outcome != "loaded"  # only the .gz is served
    # Emscripten asks twice (streaming instantiation, then a plain fetch) when the file is missing.
    wasm_requests = {p for p in page.requested if p.endswith((".wasm", ".wasm.gz"))}
    assert wasm_requests == {f"/vendor/onnxruntime-web/{WASM}"}, page.requested
    assert page.blocked == []


def test_errors_are_one_line(page, site):
    url, _ = site
    open_page(page, url)
    messages = page.evaluate("""async () => {
      const {loadRuntime, LatentDecoder, drawImage} = window.decoder;
      const errors = [];
      const catching = async (f) => {
        try { await f(); errors.push('no error'); } catch (e) { errors.push(e.message); }
      };
      await catching(() => LatentDecoder.load('rgb.onnx'));   // before loadRuntime
      await loadRuntime('vendor/onnxruntime-web/');
      await catching(() => loadRuntime('elsewhere/'));
      await catching(() => LatentDecoder.load('missing.onnx'));
      await catching(() => LatentDecoder.load('latent_decoder.js'));   // not a model
      const decoder = await LatentDecoder.load('rgb.onnx');
      await catching(() => decoder.decode(new Float32Array(2)));
      await catching(() => decoder.decode([0, 0, 0, 0, 0]));
      await catching(() => drawImage(document.getElementById('canvas'), {data: new Float32Array(4), channels: 1,
                                                                         height: 2, width: 2}, 1.5));
      return errors;
    }""")
    assert len(messages) == 7 and "no error" not in messages, messages
    for m in messages:
        assert m and "\n" not in m, m
    assert "loadRuntime" in messages[0]
    assert "missing.onnx" in messages[2] and "404" in messages[2]
    assert "takes 5" in messages[4]
    page.errors = [e for e in page.errors if "404" not in e]  # the missing model's failed fetch is logged
    assert page.errors == [] and page.blocked == []


def test_decode_and_draw_time(page, site):
    """200 frames of a new latent, decode and draw; prints p50/p95 (a report, not a requirement)."""
    url, _ = site
    open_page(page, url)
    page.evaluate("() => window.decoder.loadRuntime('vendor/onnxruntime-web/')")
    times = np.array(page.evaluate(TIME_FRAMES, {"model": "rgb.onnx", "frames": 200, "dim": LATENT_DIM,
                                                 "scale": SCALE}))
    assert len(times) == 200
    print(f"\ndecode + draw over 200 frames: p50 {np.percentile(times, 50):.2f} ms, "
          f"p95 {np.percentile(times, 95):.2f} ms, max {times.max():.2f} ms")
    assert page.errors == [] and page.blocked == []
