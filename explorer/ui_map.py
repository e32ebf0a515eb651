"""The latent map component: a gr.HTML that draws the exported UMAP with plotly.js and reports clicks.

gr.Plot has only a `change` event in Gradio 6 (no clicks, no lasso), so the map is a gr.HTML whose
`js_on_load` (static/map.js) draws a WebGL scatter itself and sends `point_click` / `point_select`
events back to Python. plotly.min.js is served from the installed plotly package, never from a CDN:
`static_paths()` lists exactly the files the app serves besides Gradio's own.

The component's value is `figures.map_payload(...)` with its per-point arrays packed (`packed`: sent when
the run or the colouring changes); a separate `overlay` prop carries the few marks drawn on top (clicked point, interpolation
ends and path, your image, a selection), so moving a mark does not resend 10,000 points.
"""
from __future__ import annotations

import atexit
import base64
import hashlib
import math
import os
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Iterable, Optional

import gradio as gr
import numpy as np
import plotly

from .sprites import sprite_sheet

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")

# Mark colours on the map (kept apart from the categorical palette of the points).
MARK_STYLE = {
    "point": {"label": "", "color": "#111111", "symbol": "circle-open", "textposition": "top center"},
    "A": {"label": "A", "color": "#d62728", "symbol": "circle", "textposition": "top left"},
    "B": {"label": "B", "color": "#1f77b4", "symbol": "circle", "textposition": "top right"},
    "t": {"label": "t", "color": "#ff7f0e", "symbol": "diamond", "textposition": "top center"},
    "input": {"label": "★", "color": "#2ca02c", "symbol": "star", "textposition": "bottom center"},
    "you": {"label": "you", "color": "#9467bd", "symbol": "square", "textposition": "bottom right"},
}

# The per-point arrays of a map payload and how they travel to the page. Gradio's page snapshots a component's
# value on every event it dispatches, one number at a time (about 1 us each): 10,000 points as plain lists
# made every click anywhere on the page 50-100 ms slower; as base64 strings they cost nothing.
PACKED_ARRAYS = ("x", "y", "index", "dataset_index", "color")


def packed(payload: dict) -> dict:
    """A map payload as the page receives it: each per-point array as base64 of little-endian float32
    (coordinates, continuous colours) or int32 (rows, dataset indices, class codes), its type under
    `packed`. Unpacked by map.js (and by `unpacked`)."""
    out = dict(payload)
    types = {}
    for key in PACKED_ARRAYS:
        if key in payload:
            values = np.asarray(payload[key])
            dtype = "<i4" if np.issubdtype(values.dtype, np.integer) else "<f4"
            out[key] = base64.b64encode(values.astype(dtype).tobytes()).decode("ascii")
            types[key] = "int32" if dtype == "<i4" else "float32"
    out["packed"] = types
    return out


def unpacked(value: dict) -> dict:
    """The payload of a packed map value with its arrays as numpy arrays (for API clients and tests)."""
    out = dict(value)
    for key, kind in (value.get("packed") or {}).items():
        out[key] = np.frombuffer(base64.b64decode(value[key]), dtype="<i4" if kind == "int32" else "<f4")
    out.pop("packed", None)
    return out


MAP_TEMPLATE = (
    '<div class="vae-map">'
    '<div class="vae-map-plot"></div>'
    '<div class="vae-map-message"></div>'
    '<canvas class="vae-map-preview" width="96" height="96"></canvas>'
    "</div>"
)

MAP_CSS = """
.vae-map { position: relative; width: 100%; }
.vae-map-plot { width: 100%; height: 520px; }
.vae-map-message { position: absolute; inset: 0; display: none; align-items: center; justify-content: center;
  text-align: center; padding: 2em; color: var(--body-text-color-subdued); font-size: 1.05em; }
.vae-map-preview { position: absolute; display: none; width: 96px; height: 96px; pointer-events: none;
  image-rendering: pixelated; border: 2px solid var(--body-text-color); border-radius: 4px;
  background: var(--background-fill-primary); box-shadow: 0 2px 8px rgba(0, 0, 0, 0.35); z-index: 5; }
@media (max-width: 600px) { .vae-map-plot { height: 380px; } }
"""


def plotly_js_path() -> str:
    """plotly.min.js inside the installed plotly package (about 4 MB; served locally, never from a CDN)."""
    path = os.path.join(os.path.dirname(os.path.abspath(plotly.__file__)), "package_data", "plotly.min.js")
    if not os.path.isfile(path):
        raise RuntimeError(f"plotly.min.js not found at {path}; reinstall plotly")
    return path


def static_paths() -> list[str]:
    """Files the app serves besides Gradio's own: plotly.min.js (one file, not plotly's whole package
    folder), this package's static folder and the folder of the map's sprite sheets."""
    return [plotly_js_path(), STATIC_DIR, sprite_dir()]


@lru_cache(maxsize=None)
def _read_static(name: str) -> str:
    with open(os.path.join(STATIC_DIR, name), encoding="utf-8") as f:
        return f.read()


def map_component(value: Optional[dict] = None, **kwargs) -> gr.HTML:
    """The map. Events: `.point_click` (evt.row) and `.point_select` (evt.rows)."""
    # plotly.js is loaded by map.js once the page is idle, not as the component's `head`: Gradio waits for
    # head scripts before the page takes clicks, and evaluating plotly's 4.6 MB took ~1.4 s of a 3.3 s start
    # on 2 cores. A relative URL so the app also works behind a proxy under a sub-path (and on Spaces).
    return gr.HTML(
        value=value or {"message": "No run loaded."},
        html_template=MAP_TEMPLATE,
        css_template=MAP_CSS,
        js_on_load=_read_static("map.js"),
        plotly_url=f"gradio_api/file={plotly_js_path()}",
        overlay=empty_overlay(),
        **kwargs,
    )


def empty_overlay() -> dict:
    return {"marks": [], "path": [], "selected": {"x": [], "y": []}}


def overlay(marks: Optional[dict] = None, path: Optional[np.ndarray] = None,
            selected: Optional[np.ndarray] = None) -> dict:
    """The overlay prop: marks {name: (x, y)} (names from MARK_STYLE), a path (n, 2), selected points (m, 2).

    Plain Python floats only: NumPy scalars would reach the browser as strings.
    """
    out = empty_overlay()
    for name, xy in (marks or {}).items():
        if xy is None:
            continue
        style = MARK_STYLE.get(name, {"label": name, "color": "#111111", "symbol": "circle"})
        out["marks"].append({"name": name, "x": float(xy[0]), "y": float(xy[1]), **style})
    if path is not None and len(path):
        out["path"] = [[round(float(x), 4), round(float(y), 4)] for x, y in np.asarray(path)]
    if selected is not None and len(selected):
        sel = np.asarray(selected, dtype=np.float64)
        out["selected"] = {"x": np.round(sel[:, 0], 4).tolist(), "y": np.round(sel[:, 1], 4).tolist()}
    return out


def overlay_update(ov: dict) -> gr.HTML:
    """A component update that changes only the overlay prop (the points stay in the browser)."""
    return gr.HTML(overlay=ov)


def message_value(text: str) -> dict:
    return {"message": text}


def row_from_event(r) -> Optional[int]:
    """A point number sent by the browser, or None when it is not a whole number (the browser is not
    trusted: NaN and infinities arrive as floats)."""
    if isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r) or r != int(r):
        return None
    return int(r)


def rows_from_event(rows: Iterable) -> list[int]:
    """Selection rows sent by the browser, checked to be plain integers; anything but a list is no rows."""
    if not isinstance(rows, (list, tuple)):
        return []
    return [r for r in map(row_from_event, rows) if r is not None]


# ---- the hover preview's sprite sheet ---------------------------------------------------------------------------
SPRITE_BYTES = 3_000_000  # one download per run and visitor: at most a few seconds on a classroom network
SPRITE_MIN_THUMB = 16     # smaller than this a preview shows too little: halving stops here
_sprite_lock = threading.Lock()
_sprite_jobs: dict = {}   # id(thumbs) -> (thumbs, future of the sheet's URL); thumbs kept so the id stays theirs
_sprite_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="map-sprites")


@lru_cache(maxsize=None)
def sprite_dir() -> str:
    """A private folder for the sheets, served as a static path, removed with the process."""
    path = tempfile.mkdtemp(prefix="vae-explorer-sprites-")
    atexit.register(shutil.rmtree, path, True)
    return path


def sprite(run) -> Optional[dict]:
    """{url, cols} of the run's thumbnails as one sprite sheet (explorer/sprites.py), for the map's hover
    preview, or None for a run without thumbnails. The sheet is written once per run in the background
    (several seconds for 10,000 colour thumbnails): until it is there the page retries its URL, so neither a
    run switch nor the map waits for it."""
    latents = run.latents
    thumbs = latents.get("thumbs") if latents is not None else None
    if thumbs is None or thumbs.ndim != 4 or not len(thumbs):
        return None
    digest = hashlib.sha1(f"{run.path}|{run.name}|{thumbs.shape}".encode()).hexdigest()[:16]
    path = os.path.join(sprite_dir(), f"sprite-{digest}.png")
    with _sprite_lock:
        if id(thumbs) not in _sprite_jobs:
            _sprite_jobs[id(thumbs)] = (thumbs, _sprite_pool.submit(_write_sprite, thumbs, path))
    cols = int(np.ceil(np.sqrt(len(thumbs))))
    # The digest names the run, not the sheet's content: a new export under the same path gets a fresh
    # query string so that no browser shows the previous sheet from its cache.
    return {"url": f"gradio_api/file={path}?v={id(thumbs):x}", "cols": cols, "n": int(len(thumbs))}


def _write_sprite(thumbs: np.ndarray, path: str) -> str:
    data, _ = sprite_sheet(thumbs, SPRITE_BYTES, SPRITE_MIN_THUMB, optimize=False)
    partial = path + ".part"
    with open(partial, "wb") as f:
        f.write(data)
    os.replace(partial, path)  # the page never reads half a sheet
    return path
