"""The app's live sliders decode in the browser (explorer/ui_decode.py, static/live_view.js), in headless
Chromium with every request to another host blocked: dragging the interpolation slider, the attribute
strength or a live dimension slider sends nothing to the server and draws what the torch decoder gives for
that latent; without WebAssembly the same drag goes through the server and the page says why once; a run
found by a later rescan has its decoder served; the runtime's wasm reaches Chromium brotli-encoded.

Needs Debian's chromium (/usr/bin/chromium) and the playwright Python package; skipped without them.
"""
from __future__ import annotations

import json
import os
import time
import urllib.parse

import numpy as np
import pytest

from helpers_app import free_port, tiny_runs_root, torch_threads, wait_quiet
from test_browser import CHROMIUM_ARGS, CHROMIUM, image_bytes, open_tab, playwright_sync, wait_for, wait_for_new_image

from explorer import latent_ops as ops  # noqa: E402
from explorer import ui_decode  # noqa: E402

POSITIONS = 50


@pytest.fixture(scope="module")
def app():
    from explorer.ui import build_app, launch_options

    demo = build_app([tiny_runs_root()])
    port = free_port()
    with torch_threads(1):  # as app.py serves
        demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **launch_options(demo))
        yield demo, f"http://127.0.0.1:{port}/"
        demo.close()


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser, url: str, init_script: str = "", tab: str = "Interpolate"):
    """A page on the app with other hosts blocked; pg.errors collects page errors, pg.requests every URL (with
    its body), pg.finished every finished request (for its response and sizes)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    host = urllib.parse.urlsplit(url).netloc
    context.route("**/*", lambda route: route.continue_() if urllib.parse.urlsplit(route.request.url).netloc == host
                  else route.abort())
    if init_script:
        context.add_init_script(init_script)
    pg = context.new_page()
    pg.errors, pg.requests, pg.finished = [], [], []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("request", lambda r: pg.requests.append((r.url, r.post_data or "")))
    pg.on("requestfinished", lambda r: pg.finished.append(r))
    pg.goto(url)
    pg.wait_for_selector("#latent-map .vae-map-plot .main-svg", timeout=60_000)
    open_tab(pg, tab)
    return pg


def view_state(pg, view: str) -> dict:
    return pg.evaluate("(sel) => { const e = document.querySelector(sel + ' [data-mode]');"
                       " return e ? {mode: e.dataset.mode, frames: Number(e.dataset.frames || 0),"
                       " note: e.querySelector('.vae-live-note').textContent} : {}; }", view)


def endpoint_index(demo, api_name: str) -> int:
    return next(i for i, fn in demo.fns.items() if fn.api_name == api_name)


def drag_positions(pg, selector: str, start: float, end: float, n: int) -> list[tuple[str, str]]:
    """Drag a slider's thumb through n positions; returns the /gradio_api/ requests sent during the drag
    (url, body)."""
    pg.locator(f"{selector} input[type=range]").scroll_into_view_if_needed()   # the mouse moves in the viewport
    box = pg.locator(f"{selector} input[type=range]").bounding_box()
    y = box["y"] + box["height"] / 2
    pg.mouse.move(box["x"] + start * box["width"], y)
    pg.mouse.down()
    first = len(pg.requests)
    for k in range(1, n + 1):
        pg.mouse.move(box["x"] + (start + (end - start) * k / n) * box["width"], y)
        time.sleep(0.02)
    sent = [(u, body) for u, body in pg.requests[first:] if "/gradio_api/" in u]
    pg.mouse.up()
    return sent


def settled_frames(pg, view: str) -> int:
    """The frame count once it has stopped moving for 0.3 s."""
    last, since = -1, time.time()
    while time.time() - since < 0.3:
        frames = view_state(pg, view)["frames"]
        if frames != last:
            last, since = frames, time.time()
        time.sleep(0.05)
    return last


def canvas_pixels(pg, view: str) -> np.ndarray:
    """The canvas of a live view at the image's own size (H, W, 3) uint8 (it is drawn enlarged by a whole
    factor without smoothing, so every block's top-left pixel is the image's pixel)."""
    data = pg.evaluate("""(sel) => {
        const c = document.querySelector(sel + ' canvas');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height);
        return {w: c.width, h: c.height, px: Array.from(d.data)};
    }""", view)
    rgba = np.array(data["px"], dtype=np.uint8).reshape(data["h"], data["w"], 4)
    return rgba[..., :3]


def drag_in_browser(demo, pg, view: str, image: str, slider: str, endpoint: str) -> None:
    """Wait for the view to decode in the browser, drag `slider` through POSITIONS positions, check that no
    request went to the server for it, and wait for the last frame."""
    wait_for(lambda: view_state(pg, view).get("mode") == "browser", "browser decoding", timeout=60)
    wait_for(lambda: view_state(pg, view)["frames"] >= 1, "the first browser frame")
    assert pg.locator(f"{view} canvas").is_visible()
    assert not pg.locator(image).is_visible()  # the server's picture gives way to the canvas
    # The page's first views (strips, grids) are the server's work, not the slider's.
    wait_quiet(pg, quiet_s=1.5, timeout=30, requests=pg.requests)
    triggered_before = {event[1] for event in map(event_of, (body for _, body in pg.requests)) if event}
    before = view_state(pg, view)["frames"]
    sent = drag_positions(pg, slider, 0.2, 0.8, POSITIONS)
    events = [event for event in map(event_of, (body for _, body in sent)) if event]
    fn = endpoint_index(demo, endpoint)
    assert [e for e in events if e[0] == fn] == [], events   # no queue/join, no run/predict for the slider
    # Nor any other event that the drag starts (steps of the page's first views may still be arriving: they
    # carry the trigger that started them before the drag).
    assert [e for e in events if e[1] not in triggered_before] == [], events
    assert settled_frames(pg, view) > before + 5   # the drag drew frames


def event_of(body: str):
    """(fn_index, trigger_id) of a request that runs an event, else None."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return (data["fn_index"], data.get("trigger_id")) if isinstance(data, dict) and "fn_index" in data else None


def assert_canvas_shows(pg, view: str, expected: np.ndarray) -> None:
    shown = canvas_pixels(pg, view)
    scale = shown.shape[0] // expected.shape[0]
    shown = shown[::scale, ::scale][: expected.shape[0], : expected.shape[1]]
    assert shown.shape == expected.shape
    assert np.abs(shown.astype(int) - expected.astype(int)).max() <= 2


def number_value(pg, selector: str) -> float:
    return float(pg.locator(f"{selector} input").first.input_value())


def test_dragging_t_decodes_in_the_browser_without_server_requests(app, browser):
    demo, url = app
    pg = open_page(browser, url)
    drag_in_browser(demo, pg, "#frame-live", "#frame", "#t", "interpolate_frame")

    t = float(pg.locator("#t input[type=range]").input_value())
    assert t > 0.7
    a, b = (int(pg.locator(f"{s} input").input_value()) for s in ("#point-a", "#point-b"))
    method = pg.locator("#method input:checked").input_value()
    run = demo.points.run("vae")
    expected = ops.decode(run, ops.interpolate_at(ops.table_latent(run, a), ops.table_latent(run, b), t, method))[0]
    assert_canvas_shows(pg, "#frame-live", expected)
    assert not pg.errors, pg.errors
    # The runtime's wasm came once, brotli-encoded: Chromium takes br even over plain http, and the bytes on
    # the wire are the .br file's (the frames above were decoded with it).
    wasm = [r for r in pg.finished if r.url.endswith(ui_decode.file_url(ui_decode.WASM_GZ))]
    assert len(wasm) == 1, [r.url for r in pg.finished]
    assert wasm[0].response().headers.get("content-encoding") == "br"
    assert wasm[0].sizes()["responseBodySize"] == os.path.getsize(ui_decode.WASM_BR)
    # The page's Link header preloads the runtime and the decoder; the scripts take those responses over.
    decoders = [r for r in pg.finished if r.url.endswith(ui_decode.DECODER_FILE)]
    module = [r for r in pg.finished if r.url.endswith(ui_decode.RUNTIME_MODULE)]
    assert len(decoders) == 1 and len(module) == 1, [r.url for r in pg.finished]
    pg.context.close()


def test_dragging_the_attribute_strength_decodes_in_the_browser(app, browser):
    from explorer.tabs.attributes import checked_attribute

    demo, url = app
    pg = open_page(browser, url, tab="Attributes")
    wait_for(lambda: pg.locator("#attribute input").input_value(), "an attribute")
    drag_in_browser(demo, pg, "#attr-live", "#attr-out", "#strength", "attribute_edit")

    strength = float(pg.locator("#strength input[type=range]").input_value())
    lo, hi = (float(pg.locator("#strength input[type=range]").get_attribute(k)) for k in ("min", "max"))
    assert strength > lo + 0.6 * (hi - lo)   # moved right from the middle
    run = demo.points.run("vae")
    v, _ = checked_attribute(run, pg.locator("#attribute input").input_value(),
                             pg.locator("#corrected input").is_checked())
    z = ops.table_latent(run, int(number_value(pg, "#attr-point")))
    assert_canvas_shows(pg, "#attr-live", ops.decode(run, ops.apply_attribute(z, v, strength))[0])
    assert not pg.errors, pg.errors
    pg.context.close()


def test_dragging_a_live_dimension_decodes_in_the_browser(app, browser):
    from explorer.tabs.disentangle import LIVE_DIMS

    demo, url = app
    pg = open_page(browser, url, tab="Disentangle")
    drag_in_browser(demo, pg, "#live-view", "#live-image", "#live-0", "live_traversal")

    values = [float(pg.locator(f"#live-{i} input[type=range]").input_value()) for i in range(LIVE_DIMS)]
    assert values[0] > 0.5   # dragged to 0.8 of -4..4
    run = demo.points.run("vae")
    z = ops.table_latent(run, int(number_value(pg, "#trav-point"))).astype(np.float64)
    for d, value in zip(ops.dims_by_kl(run)[:LIVE_DIMS], values):
        z[int(d)] = value
    assert_canvas_shows(pg, "#live-view", ops.decode(run, z.astype(np.float32))[0])
    assert not pg.errors, pg.errors
    pg.context.close()


def test_without_webassembly_the_slider_decodes_on_the_server(app, browser):
    demo, url = app
    pg = open_page(browser, url, "delete window.WebAssembly;")
    wait_for(lambda: view_state(pg, "#frame-live").get("mode") == "server", "server mode")
    # Said once for the page (above the tabs), not once per live view.
    note = pg.locator("#vae-live-page-note")
    assert note.count() == 1 and "WebAssembly" in note.inner_text()
    for view in ("#frame-live", "#attr-live", "#live-view"):
        assert view_state(pg, view).get("note", "") == ""
    wait_for(lambda: pg.locator("#frame img").count(), "the server's frame")
    before = image_bytes(pg, "#frame")
    sent = drag_positions(pg, "#t", 0.1, 0.9, POSITIONS)
    frame_fn = endpoint_index(demo, "interpolate_frame")
    assert any(f'"fn_index":{frame_fn},' in body.replace(" ", "") for _, body in sent)   # the server path
    wait_for_new_image(pg, "#frame", before, "a new frame from the server")
    assert not pg.locator("#frame-live canvas").is_visible()
    # The note stays as it was, once on the page.
    assert pg.get_by_text("no WebAssembly").count() == 1
    assert not pg.errors, pg.errors
    pg.context.close()
