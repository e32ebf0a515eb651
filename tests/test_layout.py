"""The page's layout and consistency in a real browser (headless Chromium through Playwright), over the bundled
runs in assets/ (runs of three datasets, so that a run switch crosses datasets):
  * at 1440x900, 1024x768 and 390x844: no horizontal scrolling, every tab's button on screen (none hidden in
    an overflow menu), no page errors; a screenshot per viewport in test-artifacts/screenshots/layout/;
  * hovering a map point shows its thumbnail from the run's sprite sheet, without a request;
  * a map click is one request that brings the point's image and reconstruction;
  * a run switch refreshes the analogy and the comparison, whose choices are the same dataset's runs, and
    puts the marks A, B, t and ★ on four different spots;
  * the model card shows a short table of at most about eight rows and opens the full card on a click;
  * an upload is reconstructed at once; a refused interpolation end clears the strip, frame and path.

Needs Debian's chromium (/usr/bin/chromium) and the playwright Python package; skipped without them.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from helpers_app import wait_quiet
from test_browser import (CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, digest, image_bytes, image_src, map_point_position,
                          open_tab, playwright_sync, wait_for, wait_for_new_image)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(REPO, "assets")
LAYOUT_SHOTS = os.path.join(SCREENSHOTS, "layout")
VIEWPORTS = [(1440, 900), (1024, 768), (390, 844)]


def _runs_by_dataset() -> dict:
    found: dict = {}
    for name in sorted(os.listdir(ASSETS)) if os.path.isdir(ASSETS) else []:
        path = os.path.join(ASSETS, name, "config.json")
        if os.path.isfile(path) and os.path.isfile(os.path.join(ASSETS, name, "latents.npz")):
            found.setdefault(json.load(open(path, encoding="utf-8"))["data"]["name"], []).append(name)
    return found


RUNS = _runs_by_dataset()
TIMELINE_RUNS = [name for names in RUNS.values() for name in names
                 if os.path.isfile(os.path.join(ASSETS, name, "timeline.npz"))]
if not {"smileys", "dsprites"} <= set(RUNS):
    pytest.skip("needs the bundled smileys and dSprites runs in assets/", allow_module_level=True)


@pytest.fixture(scope="module")
def app_url():
    from helpers_app import free_port, torch_threads

    from explorer.ui import build_app, launch_options

    demo = build_app([ASSETS])
    port = free_port()
    with torch_threads(1):  # as app.py serves
        demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **launch_options(demo))
        yield f"http://127.0.0.1:{port}/"
        demo.close()


@pytest.fixture(scope="module")
def browser():
    os.makedirs(LAYOUT_SHOTS, exist_ok=True)
    print(f"\nlayout screenshots: {LAYOUT_SHOTS}")
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser, url: str, width: int = 1440, height: int = 900, scheme: str = "light"):
    pg = browser.new_page(viewport={"width": width, "height": height}, color_scheme=scheme)
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.goto(url)
    pg.wait_for_selector("#latent-map .vae-map-plot .main-svg", timeout=60_000)
    open_tab(pg, "Point")   # the page opens on the Lesson tab; Gradio draws a tab when it is opened
    wait_for(lambda: image_src(pg, "#pt-image") is not None, "the first point's image", timeout=60)
    return pg


def choose(pg, dropdown: str, option: str) -> None:
    pg.locator(f"{dropdown} input").click()
    pg.get_by_role("option", name=option, exact=True).click()


def switch_run(pg, name: str) -> None:
    choose(pg, "#run", name)
    wait_for(lambda: pg.evaluate("document.querySelector('#latent-map .vae-map-plot').data[0].x.length") > 0
             and name in pg.locator("#card").inner_text(), f"the card of {name}")


@pytest.fixture(scope="module")
def page(browser, app_url):
    pg = open_page(browser, app_url)
    yield pg
    pg.close()


def settle(pg, quiet_s: float = 3.0, timeout: float = 90.0) -> None:
    """Wait until the page has sent no request to the app for quiet_s (its first views are all in), with the
    map on screen."""
    pg.evaluate("window.scrollTo(0, 0)")
    wait_quiet(pg, quiet_s, timeout)


# ---- layout ---------------------------------------------------------------------------------------------------
TAB_STATE = """() => {
  const tabs = [...document.querySelectorAll('#tabs [role=tab]')].map((b) => {
    const r = b.getBoundingClientRect();
    return {name: b.textContent.trim(), shown: r.width > 0 && r.height > 0 && r.left >= 0 && r.right <= innerWidth};
  });
  const more = [...document.querySelectorAll('#tabs [aria-label="More tabs"]')].some((b) => b.offsetParent !== null);
  return {scroll: document.documentElement.scrollWidth, inner: innerWidth, tabs: tabs, more: more};
}"""


LABEL_CLEAR = """(sel) => {
  const root = document.querySelector(sel), label = root.querySelector('[data-testid=block-label]');
  const l = label.getBoundingClientRect();
  const over = [...root.querySelectorAll('.icon-button')].filter((b) => {
    const r = b.getBoundingClientRect();
    return r.width > 0 && !label.contains(b) && r.left < l.right && r.right > l.left && r.top < l.bottom && r.bottom > l.top;
  });
  return over.length === 0 && label.scrollWidth <= label.clientWidth + 1;
}"""


@pytest.mark.parametrize("width,height", VIEWPORTS, ids=[f"{w}x{h}" for w, h in VIEWPORTS])
def test_no_overflow_and_every_tab_on_screen(page, width, height):
    page.set_viewport_size({"width": width, "height": height})
    # The projector size is checked in the dark theme, the others in the light one.
    page.emulate_media(color_scheme="dark" if width == 1024 else "light")
    try:
        names = []
        for k in range(page.locator("#tabs [role=tab]").count()):
            state = page.evaluate(TAB_STATE)
            assert not state["more"], f"tabs in an overflow menu at {width}px"
            hidden = [t["name"] for t in state["tabs"] if not t["shown"]]
            assert not hidden, f"tab buttons off screen at {width}px: {hidden}"
            tab = page.locator("#tabs [role=tab]").nth(k)
            names.append(tab.inner_text().strip())
            tab.click()
            page.wait_for_timeout(300)
            state = page.evaluate(TAB_STATE)
            # The page never scrolls sideways, whichever tab is open.
            assert state["scroll"] <= state["inner"], f"{names[-1]} tab: page {state['scroll']} px wide at {width}px"
        assert len(names) >= 8, names
        open_tab(page, names[0])
        page.wait_for_timeout(300)
        page.screenshot(path=os.path.join(LAYOUT_SHOTS, f"{width}x{height}.png"), full_page=True)
        # Nothing cuts the reconstruction's label: it fits above the picture, beside its buttons.
        assert page.evaluate(LABEL_CLEAR, "#pt-recon"), "the reconstruction's label is cut or under its buttons"
        assert not page.errors, page.errors
    finally:
        page.set_viewport_size({"width": 1440, "height": 900})
        page.emulate_media(color_scheme="light")
        page.evaluate("window.scrollTo(0, 0)")


PAGE_WIDTH = "[document.scrollingElement.scrollWidth, innerWidth]"


@pytest.mark.parametrize("width,height", VIEWPORTS, ids=[f"{w}x{h}" for w, h in VIEWPORTS])
def test_the_training_tab_fits_every_viewport(page, width, height):
    if not TIMELINE_RUNS:
        pytest.skip("no bundled run with a training timeline (timeline.npz)")
    if page.locator("#run input").input_value() != TIMELINE_RUNS[0]:
        switch_run(page, TIMELINE_RUNS[0])
    page.set_viewport_size({"width": width, "height": height})
    try:
        open_tab(page, "Training")
        wait_for(lambda: image_src(page, "#timeline-recon") and image_src(page, "#timeline-samples"),
                 "the timeline's pictures", timeout=60)
        page.wait_for_timeout(300)
        scroll, inner = page.evaluate(PAGE_WIDTH)
        assert scroll <= inner, f"Training tab: page {scroll} px wide at {width}px"
        assert not page.errors, page.errors
    finally:
        open_tab(page, "Point")  # the next tests click the map beside the tabs
        page.set_viewport_size({"width": 1440, "height": 900})
        page.evaluate("window.scrollTo(0, 0)")


# ---- the map ---------------------------------------------------------------------------------------------------
def test_hovering_a_point_shows_its_thumbnail_without_a_request(page):
    settle(page)
    page.wait_for_function("() => { const d = document.querySelector('#latent-map .vae-map-plot').data;"
                           " return d && d[0].customdata && d[0].customdata.length > 10; }")
    run = page.locator("#run input").input_value()
    thumbs = np.load(os.path.join(ASSETS, run, "latents.npz"))["thumbs"]
    requests = []
    page.on("request", lambda r: requests.append(r.url) if "/gradio_api/" in r.url and "sprite" not in r.url else None)
    shown = []
    for row in (3, 40, 77):
        x, y = map_point_position(page, row)
        page.mouse.move(x, y)
        # The sheet loads in the background on first show: wait for it, then the preview is immediate.
        hovered = wait_for(lambda: page.evaluate("() => { const c = document.querySelector('.vae-map-preview');"
                                                 " return c.style.display === 'block' && c.dataset.row; }"),
                           f"the preview of a point near {row}")
        pixels = np.frombuffer(page.locator(".vae-map-preview").screenshot(), dtype=np.uint8)
        shown.append((int(hovered), digest(pixels.tobytes())))
    assert len({d for _, d in shown}) == len(shown), "every point's preview is a different picture"
    # The preview is the point's own thumbnail, drawn from the sheet: compare its centre with the thumbnail.
    row = shown[-1][0]
    canvas = page.evaluate("() => document.querySelector('.vae-map-preview').toDataURL()")
    drawn = _data_url_image(canvas)
    expected = thumbs[row].transpose(1, 2, 0).astype(np.float32)
    small = np.asarray(Image.fromarray(drawn).resize(expected.shape[1::-1], Image.BOX), dtype=np.float32)
    small = small[..., :expected.shape[2]] if expected.shape[2] == 3 else small[..., :1]
    assert np.abs(small - expected).mean() < 24, "the preview is not this point's thumbnail"
    assert not requests, requests
    page.mouse.move(2, 2)
    wait_for(lambda: page.evaluate("document.querySelector('.vae-map-preview').style.display === 'none'"),
             "the preview hidden after leaving the point")


def _data_url_image(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def test_a_map_click_is_one_request_with_the_image_and_its_reconstruction(page):
    settle(page)
    before_image, before_recon = image_bytes(page, "#pt-image"), image_bytes(page, "#pt-recon")
    posts = []
    # Events only: the sketchpad of a visited Reconstruct tab uploads its canvas on its own schedule.
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" and "/gradio_api/" in r.url
            and not r.url.endswith("/upload") else None)
    x0, y0 = map_point_position(page, 0)
    target = max(range(1, 400, 9), key=lambda r: sum((a - b) ** 2 for a, b in zip(map_point_position(page, r), (x0, y0))))
    page.mouse.click(*map_point_position(page, target))
    wait_for_new_image(page, "#pt-image", before_image, "the clicked point's image")
    wait_for_new_image(page, "#pt-recon", before_recon, "the clicked point's reconstruction")
    clicked = page.locator("#point input").input_value()
    assert clicked not in ("", "0") and f"point {clicked}" in page.locator("#pt-info").inner_text()
    wait_for(lambda: page.evaluate("document.querySelector('#latent-map .vae-map-plot').data"
                                   ".some(t => t.name === 'mark point')"), "the clicked point's mark")
    page.wait_for_timeout(500)
    assert len(posts) == 1, posts


# ---- consistency ------------------------------------------------------------------------------------------------
def test_comparison_lists_only_runs_of_the_same_dataset_natural_pair_first():
    from explorer.points import Points
    from explorer.runs import RunRegistry
    from explorer.tabs.map_panel import MapPanel

    points = Points(RunRegistry([ASSETS]))
    panel = MapPanel.__new__(MapPanel)
    panel.points = points
    for dataset, names in RUNS.items():
        for name in names:
            run = points.run(name)
            choices = panel.comparable_runs(run)
            assert set(choices) == set(names) - {name}, (name, choices)
            if choices and not run.is_vq:
                first = points.run(choices[0])
                # Another model, and one with continuous latents when there is one.
                assert first.config.model.name != run.config.model.name or len(choices) == 1
                assert not first.is_vq or all(points.run(c).is_vq for c in choices)


def analogy_in_colour(page):
    """True: the analogy shows colour pictures (smileys); False: greyscale (dSprites); None: none shown."""
    if not image_src(page, "#analogy"):
        return None
    rgb = np.asarray(Image.open(io.BytesIO(image_bytes(page, "#analogy"))).convert("RGB"), dtype=np.int16)
    return bool(np.abs(rgb[..., 0] - rgb[..., 1]).max() > 2)


def test_a_run_switch_refreshes_the_analogy_and_the_comparison(page):
    smileys, dsprites = RUNS["smileys"][0], RUNS["dsprites"][0]
    switch_run(page, smileys)
    open_tab(page, "Attributes")
    page.locator("#analogy-btn").click()
    wait_for(lambda: analogy_in_colour(page) is True, "the smileys analogy (colour faces)", timeout=90)
    switch_run(page, dsprites)
    # The analogy is recomputed with the dSprites run (greyscale shapes), not left as faces.
    wait_for(lambda: analogy_in_colour(page) is False, "the dSprites analogy instead of the faces", timeout=90)
    # The comparison offers only dSprites runs, the other one first.
    open_tab(page, "Disentangle")
    expected = [n for n in RUNS["dsprites"] if n != dsprites]
    wait_for(lambda: page.locator("#compare input").input_value() == expected[0], "the natural pair as comparison")
    page.locator("#compare input").click()
    options = [o.split("\n")[-1].strip() for o in page.get_by_role("option").all_inner_texts()]
    page.keyboard.press("Escape")
    assert set(options) == {"none", *expected}, options
    wait_for(lambda: image_src(page, "#cmp-grid"), "the compared run's traversal")
    assert not page.errors, page.errors


MARKS = """() => {
  const data = document.querySelector('#latent-map .vae-map-plot').data || [];
  const out = {};
  for (const t of data) if ((t.name || '').startsWith('mark ')) out[t.name.slice(5)] = [t.x[0], t.y[0]];
  return out;
}"""


def starting_marks(pg) -> dict:
    """{'A': (x, y), 'B': ..., 't': ..., 'input': ...} once the map shows all four, else {}."""
    marks = pg.evaluate(MARKS)
    return marks if {"A", "B", "t", "input"} <= set(marks) else {}


def test_after_a_run_switch_a_b_t_and_star_sit_on_four_spots(page):
    for tab in ("Interpolate", "Attributes"):   # Gradio draws a tab's inputs when it is first opened
        open_tab(page, tab)
    for name in (RUNS["smileys"][0], RUNS["dsprites"][0]):
        switch_run(page, name)
        wait_for(lambda: len({page.locator(f"{sel} input").input_value()
                              for sel in ("#point-a", "#point-b", "#attr-point")}) == 3, f"{name}: three different points A, B and ★")
        wait_for(lambda: starting_marks(page), f"{name}: the marks A, B, t and ★ on the map")
        spots = {(round(x, 3), round(y, 3)) for x, y in starting_marks(page).values()}
        assert len(spots) == len(starting_marks(page)), (name, starting_marks(page))
    assert not page.errors, page.errors


CARD_ROWS = """() => {
  const rows = [...document.querySelectorAll('#card tbody tr')].filter((r) => r.checkVisibility());
  const heights = rows.map((r) => r.getBoundingClientRect().height);
  return {texts: rows.map((r) => r.innerText), height: heights.reduce((a, b) => a + b, 0),
          tallest: Math.max(0, ...heights)};
}"""


def test_the_model_card_shows_a_short_table_and_opens_the_full_one_on_click(page):
    name = RUNS["smileys"][0]
    switch_run(page, name)
    wait_for(lambda: page.locator("#card summary").count() == 1, "the card's 'Full model card' summary")
    short = page.evaluate(CARD_ROWS)
    assert name in page.locator("#card").inner_text()
    assert 4 <= len(short["texts"]) <= 8, short["texts"]
    # At most about eight rows tall: a long value wrapping onto a second line counts as a row.
    one_line = min(page.evaluate("() => [...document.querySelectorAll('#card tbody tr')]"
                                 ".filter((r) => r.checkVisibility()).map((r) => r.getBoundingClientRect().height)"))
    assert short["height"] <= 8.5 * one_line, short
    assert not any(t.startswith("training steps") for t in short["texts"]), short["texts"]
    page.locator("#card summary").click()
    wait_for(lambda: any(t.startswith("training steps") for t in page.evaluate(CARD_ROWS)["texts"]),
             "the full model card after a click")
    assert len(page.evaluate(CARD_ROWS)["texts"]) > 15
    page.locator("#card summary").click()   # folded again for the tests that follow
    assert not page.errors, page.errors


def test_an_upload_is_reconstructed_at_once_without_the_previous_noise(page, tmp_path):
    open_tab(page, "Reconstruct")
    page.locator("#noise input[type=number]").fill("0.5")
    page.locator("#noise input[type=number]").press("Enter")
    wait_for(lambda: image_src(page, "#rc-input"), "a first reconstruction")
    before = image_bytes(page, "#rc-output")
    picture = np.zeros((64, 64), dtype=np.uint8)
    picture[16:48, 24:40] = 255  # a bar, unlike any first dataset point
    path = tmp_path / "bar.png"
    Image.fromarray(picture).save(path)
    page.locator("#upload input[type=file]").set_input_files(str(path))
    wait_for_new_image(page, "#rc-output", before, "the upload's reconstruction")
    wait_for(lambda: "your upload" in page.locator("#rc-info").inner_text(), "the upload named as the input")
    assert page.locator("#recon-source input[value='upload']").is_checked()
    assert float(page.locator("#noise input[type=number]").input_value()) == 0.0
    assert "noise" not in page.locator("#rc-info").inner_text()


def test_a_refused_interpolation_end_clears_the_strip_frame_and_path(page):
    open_tab(page, "Interpolate")
    page.locator("#interp-btn").click()
    wait_for(lambda: image_src(page, "#strip") and image_src(page, "#frame"), "the strip and the frame")
    wait_for(lambda: page.evaluate("document.querySelector('#latent-map .vae-map-plot').data"
                                   ".some(t => t.name === 'path')"), "the path on the map")
    page.locator("#point-a input").fill("99999")
    page.locator("#point-a input").press("Enter")
    wait_for(lambda: page.locator(".toast-body, [data-testid=toast-body]").count() > 0, "the error message")
    wait_for(lambda: image_src(page, "#strip") is None and image_src(page, "#frame") is None,
             "the strip and the frame cleared")
    wait_for(lambda: not page.evaluate("document.querySelector('#latent-map .vae-map-plot').data"
                                       ".some(t => t.name === 'path')"), "the path taken off the map")
    assert not page.errors, page.errors


def test_a_run_switch_clears_the_downloaded_file(page):
    names = [n for ns in RUNS.values() for n in ns]
    current = page.locator("#run input").input_value()
    open_tab(page, "Downloads")
    page.locator("#dl-latents").click()
    wait_for(lambda: ".csv" in page.locator("#dl-file").inner_text(), "the latent table's CSV")
    switch_run(page, next(n for n in names if n != current))
    # The previous run's file would pass for the new run's.
    wait_for(lambda: ".csv" not in page.locator("#dl-file").inner_text(), "the download cleared by the run switch")
    assert not page.errors, page.errors


# ---- the API ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(app_url):
    gradio_client = pytest.importorskip("gradio_client")
    return gradio_client.Client(app_url, verbose=False)


def test_the_colour_menu_names_columns_by_their_titles(client):
    from explorer.points import Points
    from explorer.runs import RunRegistry

    name = RUNS["dsprites"][0]
    run = Points(RunRegistry([ASSETS])).run(name)
    colour = client.predict(name, api_name="/select_run")[2]
    titles = {value: label for label, value in colour["choices"]}
    assert titles["none"] == "none" and titles["split"] == "split (train/test)", titles
    for column, info in zip(run.label_names, run.labels):
        assert titles[column] == info.title, (column, titles[column])
    dims = [value for value in titles if re.fullmatch(r"z\d+", value)]
    assert dims and all(re.fullmatch(rf"{d} \(KL \d+\.\d\)", titles[d]) for d in dims), titles
    assert any(label != value for value, label in titles.items() if value in run.label_names), titles
    # The values stay the column names: the API and lesson files colour by them.
    coloured = client.predict(name, run.label_names[-1], api_name="/map")
    assert coloured["value"]["color_by"] == run.label_names[-1]


def test_a_comparison_across_datasets_is_refused_in_one_line(client):
    smileys, dsprites = RUNS["smileys"][0], RUNS["dsprites"][0]
    with pytest.raises(Exception) as info:
        client.predict(smileys, dsprites, 0, 3.0, api_name="/compare")
    message = str(info.value)
    assert "smileys" in message and "dsprites" in message and "\n" not in message.strip(), message
    # The server keeps serving: a comparison within one dataset still works.
    if len(RUNS["dsprites"]) > 1:
        grid, *_ = client.predict(RUNS["dsprites"][1], dsprites, 0, 3.0, api_name="/compare")
        assert grid and (grid.get("value") if isinstance(grid, dict) else grid)


def test_a_refused_comparison_clears_the_compared_run(page):
    dsprites, smileys = RUNS["dsprites"], RUNS["smileys"][0]
    if len(dsprites) < 2:
        pytest.skip("needs two bundled dSprites runs to compare")
    if page.locator("#run input").input_value() != dsprites[0]:
        switch_run(page, dsprites[0])
    open_tab(page, "Disentangle")
    wait_for(lambda: image_src(page, "#cmp-grid"), "the compared run's traversal", timeout=90)
    # The menu offers only runs of this dataset; a typed name (the menu takes custom values) reaches the server.
    page.locator("#compare input").fill(smileys)
    page.locator("#compare input").press("Enter")
    wait_for(lambda: any("cannot compare" in t and "smileys" in t
                         for t in page.locator(".toast-body, [data-testid=toast-body]").all_inner_texts()),
             "the error message naming both datasets")
    wait_for(lambda: image_src(page, "#cmp-grid") is None, "the compared run's traversal cleared")
    assert "KL" not in page.locator("#cmp-note").inner_text() and not page.locator("#cmp-scores").inner_text().strip()
    assert not page.errors, page.errors
