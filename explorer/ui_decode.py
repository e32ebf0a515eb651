"""Live sliders decoded in the browser: a gr.HTML per tab (static/live_view.js) that draws on a canvas.

When the inputs that define a slider's path change (run, points, method, attribute, base point), a cheap
private step sends the component a *recipe*, its value: the run's decoder.onnx URL and the few float
lists the slider needs (endpoint latents, an attribute vector, a base latent and the dims it sets). While
the slider moves, the browser computes the latent exactly as `explorer.latent_ops` does and decodes it with
onnxruntime-web: no request per frame. Where WebAssembly, the runtime or the model is missing, the
component sends its `server_frame` event per slider move instead, which runs the tab's public endpoint (the
same handler API clients call) and shows the server's picture; the page says why once (above the tabs when
the whole page cannot decode, in the view when only its run cannot).

Only the run folders' decoder.onnx files are served, never a whole run folder: those of the runs present at
start (`decoder_paths`), and that of a run found later when a recipe first names it (`model_url`; Gradio
reads its static paths at each request).

The runtime's WebAssembly binary is vendored gzipped, and the page inflates it itself; a browser that takes
brotli gets the smaller `.br` instead, sent with `Content-Encoding: br` so that the browser inflates it
(`BrotliRuntime`, installed by `ui.launch_options`).

First frame: the page's initial config already holds each view's recipe for the default run
(`initial_recipes`), the page's `Link` header (`PreloadLinks`) has the browser download the runtime and the
default decoder with the page, and a `<head>` script (`preload_head`) starts the runtime and that decoder as
soon as Gradio adds it, so that the first frame waits neither for the views to mount nor for a server event.
"""
from __future__ import annotations

import json
import os
import threading
import urllib.parse
from functools import lru_cache
from typing import Iterable, Optional

import gradio as gr
import numpy as np
from starlette.responses import FileResponse

from training.runfolder import DECODER_FILE

from .figures import IMAGE_PX
from .runs import LoadedRun, RunRegistry

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
RUNTIME_DIR = os.path.join(STATIC_DIR, "vendor", "onnxruntime-web")
WASM_GZ = os.path.join(RUNTIME_DIR, "ort-wasm-simd-threaded.wasm.gz")   # the URL latent_decoder.js fetches
WASM_BR = os.path.join(RUNTIME_DIR, "ort-wasm-simd-threaded.wasm.br")   # the same binary, brotli
RUNTIME_MODULE = "ort.wasm.bundle.min.mjs"                              # the module latent_decoder.js imports
FILE_ROUTE = "/gradio_api/file="
NO_DECODER_NOTE = "Decoded on the server: this run has no decoder.onnx (python -m training export --decoder-only)."

# Decoder files this process serves; a recipe names a model only when its file is among them.
_served: set[str] = set()
_serving = threading.Lock()

TEMPLATE = (
    '<div class="vae-live">'
    '<div class="vae-live-label">${label}</div>'
    '<canvas class="vae-live-canvas" hidden></canvas>'
    '<div class="vae-live-note"></div>'
    "</div>"
)

CSS = """
.vae-live { display: flex; flex-direction: column; gap: 4px; }
.vae-live-label { font-size: var(--block-label-text-size); color: var(--block-label-text-color); }
.vae-live-canvas { width: auto; height: auto; max-width: none; align-self: flex-start; image-rendering: pixelated; }
.vae-live-note { font-size: 0.9em; color: var(--body-text-color-subdued); }
"""


def decoder_paths(registry: RunRegistry) -> list[str]:
    """The decoder.onnx file of every discovered run that has one (absolute paths), remembered as served."""
    paths = []
    for entry in registry.entries():
        path = os.path.abspath(os.path.join(entry.path, DECODER_FILE))
        if os.path.isfile(path):
            paths.append(path)
    _served.update(paths)
    return paths


def file_url(path: str) -> str:
    # Relative, so that the app also works behind a proxy under a sub-path.
    return "gradio_api/file=" + urllib.parse.quote(path, safe="/")


def accepts_brotli(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header takes br (named, and not with q=0)."""
    for item in accept_encoding.split(","):
        coding, *params = [part.strip() for part in item.split(";")]
        if coding.lower() != "br":
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


class BrotliRuntime:
    """ASGI middleware: a GET for the vendored wasm.gz from a client that takes br is answered with the .br
    file and `Content-Encoding: br`; the browser inflates it, and latent_decoder.js sees the raw binary (2.4 MB
    on the wire instead of 3.8 MB). Only a request whose path resolves to that one file is answered here, and
    only with the one fixed .br file; everything else, HEAD and Range requests included, goes on to Gradio.
    It answers before Gradio's login check: the runtime is public third-party code, not the app's data.
    Gradio sends that file with an ETag and a Last-Modified and no Cache-Control; FileResponse gives the .br
    the same validators (of its own file)."""

    def __init__(self, app):
        self.app = app
        # Without the .br (a partial checkout) every request goes to Gradio, as before.
        self.target = os.path.realpath(WASM_GZ) if os.path.isfile(WASM_BR) else None

    async def __call__(self, scope, receive, send):
        if self.answers(scope):
            # No ranges on this answer: a Range request goes to Gradio, which cuts it from the .gz.
            response = FileResponse(WASM_BR, media_type="application/wasm", headers={
                "Content-Encoding": "br", "Vary": "Accept-Encoding", "Accept-Ranges": "none"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def answers(self, scope) -> bool:
        if self.target is None or scope["type"] != "http" or scope.get("method") != "GET":
            return False
        path = app_path(scope)
        if not path.startswith(FILE_ROUTE) or not path.endswith(os.path.basename(WASM_GZ)):
            return False
        headers = dict(scope.get("headers") or [])
        if b"range" in headers or not accepts_brotli(headers.get(b"accept-encoding", b"").decode("latin-1")):
            return False
        return os.path.realpath(path[len(FILE_ROUTE):]) == self.target


class PreloadLinks:
    """ASGI middleware: the page itself (a GET of the app's root) carries a `Link` header that has the
    browser fetch onnxruntime-web, its wasm and the first run's decoder while Gradio's own scripts load.
    Gradio adds the page's <head> (`preload_head`) only once its scripts run, and the wasm requested then
    competes with a hundred script requests; requested with the page, it is there when the view needs it.
    The preloads ask exactly what latent_decoder.js asks (same URLs, CORS mode, same-origin credentials), so
    the browser hands their responses over instead of fetching twice. A browser without WebAssembly downloads
    them for nothing (about 2.7 MB): the price of not waiting for Gradio's scripts in every other one."""

    def __init__(self, app, links: str):
        self.app = app
        self.links = links.encode("latin-1")

    async def __call__(self, scope, receive, send):
        if not self.links or not is_page_request(scope):
            await self.app(scope, receive, send)
            return

        async def send_with_links(message):
            if message["type"] == "http.response.start" and message.get("status") == 200:
                headers = dict(message.get("headers") or [])
                if headers.get(b"content-type", b"").startswith(b"text/html"):
                    message = {**message, "headers": [*message.get("headers", []), (b"link", self.links)]}
            await send(message)

        await self.app(scope, receive, send_with_links)


def is_page_request(scope) -> bool:
    """A GET of the app's root: the page (not an API route, a file or a script)."""
    if scope["type"] != "http" or scope.get("method") != "GET":
        return False
    return app_path(scope) in ("", "/")


def app_path(scope) -> str:
    """A request's path inside the app: without the sub-path a proxy serves the app under (root_path)."""
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def preload_links(model: Optional[str] = None) -> str:
    """The `Link` header value for PreloadLinks: latent_decoder.js and the runtime's module as module
    preloads, the runtime's wasm and the decoder `model` as fetch preloads. URLs are relative to the page,
    as every URL the page uses (file_url), so that the app also works under a sub-path."""
    links = [f"<{file_url(os.path.join(STATIC_DIR, 'latent_decoder.js'))}>; rel=modulepreload",
             f"<{file_url(os.path.join(RUNTIME_DIR, RUNTIME_MODULE))}>; rel=modulepreload",
             f"<{file_url(WASM_GZ)}>; rel=preload; as=fetch; crossorigin"]
    if model:
        links.append(f"<{model}>; rel=preload; as=fetch; crossorigin")
    return ", ".join(links)


def model_url(run: LoadedRun) -> Optional[str]:
    """The URL of a loaded run's decoder.onnx; a run found after start has its file served from now on
    (only that file: the path comes from the registry, never from a visitor)."""
    path = os.path.abspath(os.path.join(run.path, DECODER_FILE))
    with _serving:
        if path not in _served:
            if not os.path.isfile(path):
                return None
            gr.set_static_paths([path])
            _served.add(path)
    return file_url(path)


def floats(a: Iterable) -> list[float]:
    """Plain Python floats (NumPy scalars would reach the browser as strings); float32 values stay exact."""
    return [float(x) for x in np.asarray(a, dtype=np.float64).reshape(-1)]


def recipe(run: LoadedRun, kind: str, **data) -> dict:
    """The value of a live view: how the browser turns its sliders into a latent for this run.

    kind 'interpolate': za, zb, method; 'attribute': z, v; 'dims': z, dims (slider i sets z[dims[i]])."""
    url = model_url(run)
    if url is None:
        return no_recipe(NO_DECODER_NOTE)
    return {"kind": kind, "model": url, "run": run.name, **data}


def no_recipe(note: str = "") -> dict:
    """No browser decoding for the current inputs: the sliders use the server (note: why, or empty)."""
    return {"kind": None, "model": None, "note": note}


def initial_recipes(steps) -> Optional[str]:
    """Give each live view (the single output of a recipe step) the recipe of the page's initial inputs as
    its starting value; returns the model URL of the first recipe that has one (for `preload_head`)."""
    model = None
    for step in steps:
        try:
            value = step.fn(*[c.value for c in step.inputs])
        except Exception:   # noqa: BLE001 -- a view without a starting recipe waits for the page's load event
            continue
        step.outputs[0].value = value
        model = model or value.get("model")
    return model


def preload_head(model: Optional[str] = None) -> str:
    """A <head> script that loads onnxruntime-web and the decoder `model` while Gradio starts up. It loads
    the same module URLs the views load, so that they share the runtime and the cached decoder; a failure
    here is silent (each view reports its own). `<` is escaped so that no path can close the script."""
    urls = dict(module=file_url(os.path.join(STATIC_DIR, "latent_decoder.js")),
                runtime=file_url(RUNTIME_DIR) + "/", model=model)
    data = json.dumps(urls).replace("<", "\\u003c")
    return ("<script>(() => { if (typeof WebAssembly !== 'object') return;"
            f" const u = {data}; const abs = (x) => new URL(x, document.baseURI).href;"
            " import(abs(u.module)).then(async (m) => { await m.loadRuntime(abs(u.runtime));"
            " if (u.model) await m.cachedDecoder(u.model); }).catch(() => {}); })();</script>")


@lru_cache(maxsize=None)
def _script() -> str:
    with open(os.path.join(STATIC_DIR, "live_view.js"), encoding="utf-8") as f:
        return f.read()


def live_view(label: str, image_id: str, slider_ids: list[str], **kwargs) -> gr.HTML:
    """The canvas that replaces the picture `image_id` while browser decoding works; it listens to the
    sliders `slider_ids` (elem_ids, in the order the recipe uses them). Event: `.server_frame`."""
    return gr.HTML(
        value=no_recipe(),
        html_template=TEMPLATE,
        css_template=CSS,
        js_on_load=_script(),
        label=label,
        image_id=image_id,
        slider_ids=list(slider_ids),
        image_px=IMAGE_PX,   # the canvas draws at the server's size: the smallest whole factor reaching it
        module_url=file_url(os.path.join(STATIC_DIR, "latent_decoder.js")),
        runtime_url=file_url(RUNTIME_DIR) + "/",
        **kwargs,
    )
