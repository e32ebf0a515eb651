"""The explorer in a real browser (headless Chromium through Playwright): click a point on the WebGL map,
select with the box tool, drag the interpolation slider, apply an attribute vector, and check that the
images on the page change. Screenshots go to test-artifacts/screenshots/ (gitignored).

Needs Debian's chromium (/usr/bin/chromium) and the playwright Python package; skipped without them.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import time

import pytest

from helpers_app import free_port, tiny_runs_root, torch_threads

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "test-artifacts",
                           "screenshots")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

playwright_sync = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def app_url():
    from explorer.ui import build_app, launch_options

    demo = build_app([tiny_runs_root()])
    port = free_port()
    with torch_threads(1):  # as app.py serves
        demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **launch_options(demo))
        yield f"http://127.0.0.1:{port}/"
        demo.close()


@pytest.fixture(scope="module")
def page(app_url):
    os.makedirs(SCREENSHOTS, exist_ok=True)
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 800})
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(app_url)
        pg.wait_for_selector("#latent-map .vae-map-plot .main-svg", timeout=60_000)
        open_tab(pg, "Point")   # the page opens on the Lesson tab; Gradio draws a tab when it is opened
        wait_for(lambda: image_src(pg, "#pt-image") is not None, "the first point's image")
        pg.errors = errors
        yield pg
        browser.close()


# ---- helpers ------------------------------------------------------------------------------------------------
def wait_for(condition, what: str, timeout: float = 30.0):
    start = time.time()
    while time.time() - start < timeout:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def image_src(page, selector: str):
    # One atomic read in the page: a count() then get_attribute() pair races with Gradio replacing or
    # removing the <img> in between, and get_attribute then waits its full timeout for a gone element.
    return page.evaluate("(sel) => { const img = document.querySelector(sel + ' img');"
                         " return img ? img.getAttribute('src') : null; }", selector)


def image_bytes(page, selector: str) -> bytes:
    src = image_src(page, selector)
    assert src, f"no image in {selector}"
    return page.request.get(src).body()


def digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


def wait_for_new_image(page, selector: str, before: bytes, what: str) -> bytes:
    """Wait until the image shown in `selector` has other bytes than `before`."""
    def changed():
        src = image_src(page, selector)
        if not src:
            return None
        data = page.request.get(src).body()
        return data if digest(data) != digest(before) else None
    return wait_for(changed, what)


def shown_frame(page, view: str, image: str) -> bytes:
    """What a live slider shows: its view's canvas while it decodes in the browser (explorer/ui_decode.py),
    else the server's picture."""
    url = page.evaluate("(sel) => { const e = document.querySelector(sel + ' [data-mode]');"
                        " return e && e.dataset.mode === 'browser' ? e.querySelector('canvas').toDataURL() : null; }",
                        view)
    return url.encode() if url else image_bytes(page, image)


def wait_for_new_frame(page, view: str, image: str, before: bytes, what: str) -> bytes:
    def changed():
        data = shown_frame(page, view, image) if image_src(page, image) else None
        return data if data and digest(data) != digest(before) else None
    return wait_for(changed, what)


def shot(page, name: str) -> None:
    page.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"), full_page=True)


def open_tab(page, name: str) -> None:
    """Click a tab's button; on a narrow page Gradio moves the last tabs into its "More tabs" menu."""
    button = page.locator("#tabs button[role=tab]", has_text=name)
    if button.count():
        button.first.click()
        return
    page.locator("#tabs .overflow-menu > button").click()
    page.locator("#tabs .overflow-dropdown button", has_text=name).first.click()


def map_point_position(page, row: int) -> tuple[float, float]:
    """Page coordinates of a point of the map (plotly's own axis conversion)."""
    return tuple(page.evaluate(
        """(row) => {
            const gd = document.querySelector('#latent-map .vae-map-plot');
            const fl = gd._fullLayout, box = gd.getBoundingClientRect();
            for (const tr of gd.data) {
                if (!tr.customdata) continue;
                const i = tr.customdata.indexOf(row);
                if (i >= 0) return [box.left + fl._size.l + fl.xaxis.l2p(tr.x[i]),
                                    box.top + fl._size.t + fl.yaxis.l2p(tr.y[i])];
            }
            return null;
        }""", row))


def drag_slider(page, selector: str, start: float, end: float) -> None:
    """Drag a Gradio slider's thumb from fraction `start` to `end` of its track, in small steps."""
    box = page.locator(f"{selector} input[type=range]").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + start * box["width"], y)
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(box["x"] + (start + (end - start) * k / 10) * box["width"], y)
        time.sleep(0.05)
    page.mouse.up()


# ---- the tests (in page order: they share one browser page) -----------------------------------------------
def test_page_loads_with_map_card_and_first_point(page):
    assert page.locator("#latent-map .vae-map-plot canvas").count() >= 1  # the WebGL scatter
    assert "vae" in page.locator("#card").inner_text()
    assert page.locator("#point input").input_value() == "0"
    # The map's toolbar keeps its tools and offers nothing that uploads the chart (Plotly Cloud).
    titles = page.eval_on_selector_all("#latent-map .modebar-btn", "bs => bs.map(b => b.getAttribute('data-title'))")
    assert "Box Select" in titles and not any("share" in (t or "").lower() or "cloud" in (t or "").lower()
                                              for t in titles), titles
    shot(page, "01-loaded")
    assert not page.errors, page.errors


def test_clicking_a_map_point_shows_its_image(page):
    before_image = image_bytes(page, "#pt-image")
    before_recon = image_bytes(page, "#pt-recon")
    rows = [page.evaluate("document.querySelector('#latent-map .vae-map-plot').data[0].customdata.length")]
    assert rows[0] > 10
    # A point far from point 0 on the map.
    x0, y0 = map_point_position(page, 0)
    target = max(range(1, 300, 7), key=lambda r: sum((a - b) ** 2 for a, b in
                                                      zip(map_point_position(page, r), (x0, y0))))
    x, y = map_point_position(page, target)
    page.mouse.click(x, y)
    clicked = wait_for(lambda: page.locator("#point input").input_value() not in ("", "0") and
                       page.locator("#point input").input_value(), "the clicked point number")
    after = wait_for_new_image(page, "#pt-image", before_image, "the clicked point's image")
    assert digest(after) != digest(before_image)
    wait_for_new_image(page, "#pt-recon", before_recon, "the clicked point's reconstruction")
    assert f"point {clicked}" in page.locator("#pt-info").inner_text()
    # The clicked point is marked on the map (overlay traces after the point traces).
    wait_for(lambda: page.evaluate(
        "document.querySelector('#latent-map .vae-map-plot').data.some(t => t.name === 'mark point')"), "the mark")
    shot(page, "02-point-clicked")


def test_box_selection_shows_the_selected_images(page):
    page.locator("#latent-map .modebar-btn[data-val='select']").first.click()
    box = page.locator("#latent-map .vae-map-plot .nsewdrag").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5, steps=8)
    page.mouse.move(box["x"] + box["width"] * 0.7, box["y"] + box["height"] * 0.7, steps=8)
    page.mouse.up()
    text = wait_for(lambda: page.locator("#selection textarea, #selection input").first.input_value(),
                    "the selected point numbers")
    n = len([t for t in text.split(",") if t.strip()])
    assert n > 0
    wait_for(lambda: f"{n} points selected" in page.locator("#sel-info").inner_text(), "the selection summary")
    wait_for(lambda: image_src(page, "#sel-gallery") and image_src(page, "#sel-mean"), "the selected images")
    shot(page, "03-box-selection")
    page.locator("#latent-map .modebar-btn[data-val='pan']").first.click()


def test_dragging_the_interpolation_slider_decodes_live(page):
    before_strip = image_bytes(page, "#strip") if image_src(page, "#strip") else b""
    page.locator("#set-b").click()  # the clicked point becomes B: the strip is decoded again
    open_tab(page, "Interpolate")
    wait_for(lambda: page.locator("#point-b input").input_value() == page.locator("#point input").input_value(),
             "B = the clicked point")
    wait_for_new_image(page, "#strip", before_strip, "the new interpolation strip")
    wait_for(lambda: page.evaluate(
        "document.querySelector('#latent-map .vae-map-plot').data.some(t => t.name === 'path')"), "the path on the map")
    wait_for(lambda: image_src(page, "#frame"), "the frame")
    before = shown_frame(page, "#frame-live", "#frame")
    drag_slider(page, "#t", 0.5, 0.95)
    after = wait_for_new_frame(page, "#frame-live", "#frame", before, "a new frame while dragging t")
    assert float(page.locator("#t input[type=number]").input_value()) > 0.8
    drag_slider(page, "#t", 0.95, 0.05)
    wait_for_new_frame(page, "#frame-live", "#frame", after, "another frame after dragging back")
    shot(page, "04-interpolation")


def test_applying_an_attribute_vector_changes_the_image(page):
    page.locator("#set-input").click()
    open_tab(page, "Attributes")
    wait_for(lambda: image_src(page, "#attr-out"), "the edited image")
    before = image_bytes(page, "#attr-out")
    before_live = shown_frame(page, "#attr-live", "#attr-out")
    drag_slider(page, "#strength", 0.7, 0.05)  # strength from +1.5 down to about −3.6
    after_live = wait_for_new_frame(page, "#attr-live", "#attr-out", before_live, "the image with the vector subtracted")
    assert float(page.locator("#strength input[type=number]").input_value()) < 0
    page.locator("#corrected input").check()
    wait_for_new_image(page, "#attr-out", before, "the bias-corrected edit from the server")
    wait_for_new_frame(page, "#attr-live", "#attr-out", after_live, "the bias-corrected edit")
    assert "ROC-AUC" in page.locator("#attr-info").inner_text()
    shot(page, "05-attributes")


def test_other_tabs_render(page):
    for tab, selector in (("Samples", "#samples"), ("Disentangle", "#trav-grid"), ("Reconstruct", "#rc-output")):
        open_tab(page, tab)
        wait_for(lambda: image_src(page, selector), f"the {tab} tab's image")
        shot(page, f"06-{tab.lower()}")
    assert not page.errors, page.errors


def natural_and_shown(page, selector: str) -> list:
    return page.evaluate("(sel) => { const i = document.querySelector(sel + ' img');"
                         " return i ? [i.naturalWidth, i.naturalHeight, i.clientWidth, i.clientHeight] : null; }",
                         selector)


def test_pictures_are_shown_at_their_natural_size(page):
    """Pictures come enlarged by whole nearest-neighbour factors: the page must neither shrink them (a wide
    grid squeezed into its column) nor stretch them by a fraction, and no toolbar or label covers them."""
    open_tab(page, "Disentangle")
    wait_for(lambda: image_src(page, "#trav-grid"), "the traversal grid")
    open_tab(page, "Point")
    for selector in ("#pt-image", "#pt-recon", "#neighbours", "#trav-grid"):
        if selector == "#trav-grid":
            open_tab(page, "Disentangle")
        sizes = wait_for(lambda: (lambda s: s if s and s[2] > 0 else None)(natural_and_shown(page, selector)),
                         f"{selector} on screen")
        assert sizes[:2] == sizes[2:], f"{selector}: natural {sizes[:2]}, shown {sizes[2:]}"
        assert min(sizes[:2]) >= 96
        assert page.locator(f"{selector} button[aria-label]").count() == 0  # no download / share / fullscreen
        overlap = page.evaluate("(sel) => { const l = document.querySelector(sel + ' label[data-testid=block-label]');"
                                " const i = document.querySelector(sel + ' img');"
                                " return l && l.offsetParent ? l.getBoundingClientRect().bottom - i.getBoundingClientRect().top : -1; }",
                                selector)
        assert overlap <= 0, f"{selector}: its label covers {overlap:.0f} px of the picture"
    open_tab(page, "Attributes")  # its live canvas (drawn in the browser) follows the same sizes
    canvas = wait_for(lambda: page.evaluate(
        "() => { const c = document.querySelector('#attr-live canvas');"
        " return c && !c.hidden && c.clientWidth ? [c.width, c.clientWidth] : null; }"), "the live canvas")
    assert canvas[0] == canvas[1] and canvas[0] >= 192, canvas
    assert not page.errors, page.errors


def test_charts_are_not_white_boxes_in_the_dark_theme(page, app_url):
    def chart_brightness(theme: str) -> float:
        import io

        import numpy as np
        from PIL import Image

        other = page.context.browser.new_page(viewport={"width": 1280, "height": 800})
        try:
            other.goto(app_url + ("?__theme=dark" if theme == "dark" else ""))
            other.wait_for_selector("#latent-map .vae-map-plot .main-svg", timeout=60_000)
            open_tab(other, "Disentangle")
            other.wait_for_selector("#kl-chart img", timeout=60_000)
            chart = other.locator("#kl-chart img")
            chart.scroll_into_view_if_needed()
            return float(np.asarray(Image.open(io.BytesIO(chart.screenshot())).convert("L")).mean())
        finally:
            other.close()

    assert chart_brightness("light") > 180  # black on white in the light theme
    assert chart_brightness("dark") < 80    # and dark, not a white box, in the dark theme


def test_switching_runs_redraws_the_map_and_the_card(page):
    before = page.evaluate("document.querySelector('#latent-map .vae-map-plot').data[0].x.length")
    page.locator("#run input").click()
    page.get_by_role("option", name="vq", exact=True).click()
    wait_for(lambda: "vqvae" in page.locator("#card").inner_text(), "the VQ-VAE's model card")
    wait_for(lambda: page.evaluate(
        "document.querySelector('#latent-map .vae-map-plot').data[0].x.length") != before, "the VQ-VAE's map")
    open_tab(page, "Samples")
    wait_for(lambda: "no prior" in page.locator("#sample-note").inner_text().lower(), "the no-prior message")
    wait_for(lambda: image_src(page, "#samples") is None, "the previous run's samples to be cleared")
    shot(page, "07-vq-run")
    assert not page.errors, page.errors
