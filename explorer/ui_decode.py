"""Live sliders decoded in the browser: a gr.HTML per tab (static/live_view.js) that draws on a canvas.

When the inputs that define a slider's path change (run, points, method, attribute, base point), a cheap
private step sends the component a *recipe*, its value: the run's decoder.onnx URL and the few float
lists the slider needs (endpoint latents, an attribute vector, a base latent and the dims it sets). While
the slider moves, the browser computes the latent exactly as `explorer.latent_ops` does and decodes it with
onnxruntime-web: no request per frame. Where WebAssembly, the runtime or the model is missing, the
component says so once and sends its `server_frame` event per slider move instead, which runs the tab's
public endpoint (the same handler API clients call) and shows the server's picture.

Only the run folders' decoder.onnx files are served (`decoder_paths`), never a whole run folder.
"""
from __future__ import annotations

import os
import urllib.parse
from functools import lru_cache
from typing import Iterable, Optional

import gradio as gr
import numpy as np

from training.runfolder import DECODER_FILE

from .figures import IMAGE_PX
from .runs import LoadedRun, RunRegistry

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
RUNTIME_DIR = os.path.join(STATIC_DIR, "vendor", "onnxruntime-web")
NO_DECODER_NOTE = "Decoded on the server: this run has no decoder.onnx (python -m training export --decoder-only)."

# Decoder files this process serves; a recipe names a model only when its file is among them.
_served: set[str] = set()

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


def model_url(run: LoadedRun) -> Optional[str]:
    path = os.path.abspath(os.path.join(run.path, DECODER_FILE))
    return file_url(path) if path in _served else None


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
