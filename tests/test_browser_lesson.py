"""The Lesson tab in a real browser (headless Chromium through Playwright) on the bundled runs: every step
of the bundled lesson is shown, its answer revealed and its "Set up this step" clicked; the test checks
the run, the tab, the comparison, the map colouring, the points and the sliders the step names, waits for
the step's pictures, and writes one screenshot per step to test-artifacts/lesson/ (gitignored; the path
is printed). Then the presenter view: ← / → move between steps, not while typing in a field.

Needs Debian's chromium (/usr/bin/chromium) and the playwright Python package; skipped without them.
"""
from __future__ import annotations

import os
import time

import pytest

from helpers_app import free_port, torch_threads
from test_browser import CHROMIUM, CHROMIUM_ARGS, image_src, open_tab, playwright_sync, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARTIFACTS = os.path.join(REPO, "test-artifacts", "lesson")

# The control each optional lesson field sets: (selector of its <input>, how the browser shows the value).
CONTROLS = {
    "compare": ("#compare input", str), "colour": ("#color-by input", str), "attribute": ("#attribute input", str),
    "point": ("#point input", str), "a": ("#point-a input", str), "b": ("#point-b input", str),
    "star": ("#attr-point input", str), "t": ("#t input[type=number]", float),
    "frames": ("#steps input[type=number]", float), "strength": ("#strength input[type=number]", float),
    "span": ("#span input[type=number]", float), "temperature": ("#temperature input[type=number]", float),
    "seed": ("#seed input", str), "samples": ("#n-samples input", str),
}
# The picture each tab draws after a set-up (the Training tab: its note, a run may have no timeline).
PICTURES = {"Samples": "#samples", "Point": "#pt-image", "Interpolate": "#strip", "Disentangle": "#trav-grid",
            "Attributes": "#attr-out", "Reconstruct": "#rc-output"}


@pytest.fixture(scope="module")
def app():
    from explorer.ui import build_app, launch_options

    demo = build_app([os.path.join(REPO, "assets")])
    port = free_port()
    with torch_threads(1):  # as app.py serves
        demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **launch_options(demo))
        demo.url = f"http://127.0.0.1:{port}/"
        yield demo
        demo.close()


@pytest.fixture(scope="module")
def page(app):
    os.makedirs(ARTIFACTS, exist_ok=True)
    print(f"\nlesson screenshots: {ARTIFACTS}")
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1440, "height": 900})
        errors = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(app.url)
        pg.wait_for_selector("#latent-map .vae-map-plot .main-svg", timeout=60_000)
        pg.wait_for_selector("#lesson-caption h2", timeout=30_000)
        pg.errors = errors
        yield pg
        browser.close()


def selected_tab(page) -> str:
    return page.locator("#tabs button[role=tab][aria-selected=true]").inner_text().strip()


def value(page, selector: str) -> str:
    return page.locator(selector).first.input_value()


def test_every_lesson_step_sets_up_its_state(page, app):
    from explorer.figures import color_choices
    from explorer.lesson_file import load_lesson

    steps = load_lesson()
    loaded = set(app.points.run_choices())
    assert selected_tab(page) == "Lesson"   # the first tab
    for i, step in enumerate(steps):
        started = time.perf_counter()
        if i:
            open_tab(page, "Lesson")
            page.locator("#lesson-next").click()
        wait_for(lambda: step.title in page.locator("#lesson-caption").inner_text(), f"step {i + 1}'s caption")
        assert value(page, "#lesson-step input").startswith(f"{i + 1}. ")
        assert not page.locator("#lesson-answer").is_visible()
        page.locator("#lesson-reveal").click()
        wait_for(lambda: page.locator("#lesson-answer").is_visible(), f"step {i + 1}'s answer")
        assert "Answer" in page.locator("#lesson-answer").inner_text()

        run = step.run if step.run in loaded else value(page, "#run input")
        picture = PICTURES.get(step.tab)
        before = image_src(page, picture) if picture else None
        page.locator("#lesson-setup").click()
        wait_for(lambda: selected_tab(page) == step.tab, f"step {i + 1}: the {step.tab} tab")
        wait_for(lambda: value(page, "#run input") == run, f"step {i + 1}: run {run}")
        wait_for(lambda: run in page.locator("#card").inner_text(), f"step {i + 1}: the card of {run}")
        if step.run not in loaded:
            wait_for(lambda: "not loaded" in page.locator("#lesson-note").inner_text(), f"step {i + 1}: the note")
        for name, setting in step.settings.items():
            if step.run not in loaded and name in ("colour", "attribute", "point", "a", "b", "star"):
                continue  # points and colours of a missing run are left out
            selector, shown = CONTROLS.get(name, (None, None))
            if name == "method":
                wait_for(lambda: page.locator(f"#method input[value='{setting}']").is_checked(), "the path method")
            elif name == "corrected":
                wait_for(lambda: page.locator("#corrected input").is_checked() == setting, "the corrected box")
            elif name == "colour":
                # The menu shows the dataset's title of the column the lesson names (dSprites' "posX" as "x").
                title = dict((v, t) for t, v in color_choices(app.points.run(run)))[setting]
                wait_for(lambda: value(page, selector) == title,
                         f"step {i + 1}: colour = {title} (shown: {value(page, selector)!r})")
            else:
                wait_for(lambda: shown(value(page, selector)) == shown(setting),
                         f"step {i + 1}: {name} = {setting} (shown: {value(page, selector)!r})")
        if picture:
            wait_for(lambda: image_src(page, picture) not in (None, before), f"step {i + 1}: the new {picture}",
                     timeout=60)
        if step.get("compare") in loaded:
            wait_for(lambda: image_src(page, "#cmp-grid"), f"step {i + 1}: the compared run's traversal", timeout=60)
        if step.get("attribute") and step.run in loaded:
            # The server-drawn panel (input, strip, the vector's description) follows the preview: the run
            # switch refreshes it too, and the class must not see the previous step's run there.
            wait_for(lambda: page.locator("#attr-info").inner_text().startswith(f"{step.get('attribute')} vector"),
                     f"step {i + 1}: the {step.get('attribute')} vector's panel", timeout=60)
        if step.tab == "Training":
            wait_for(lambda: "timeline" in page.locator("#timeline-note").inner_text().lower() or
                     "Step" in page.locator("#timeline-note").inner_text(), "the Training tab's note")
        if step.get("colour") and step.run in loaded:
            wait_for(lambda: page.evaluate("document.querySelector('#latent-map .vae-map-plot').data[0]"
                                           ".marker.color !== undefined"), "the coloured map")
        width, inner = page.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")
        assert width <= inner, f"step {i + 1}: the page is {width} px wide at {inner} px"
        page.screenshot(path=os.path.join(ARTIFACTS, f"step-{i + 1}.png"), full_page=True)
        print(f"lesson step {i + 1} ({step.tab}, {run}): {time.perf_counter() - started:.1f} s")
    assert not page.errors, page.errors


def test_presenter_view_moves_steps_with_the_arrow_keys(page):
    open_tab(page, "Lesson")
    last = value(page, "#lesson-step input")
    normal = page.evaluate("parseFloat(getComputedStyle(document.querySelector('#lesson-caption p')).fontSize)")
    page.locator("#lesson-presenter .lesson-present").click()
    wait_for(lambda: page.evaluate("!!document.querySelector('#lesson.lesson-presenting')"), "the presenter view")
    wait_for(lambda: page.evaluate("document.fullscreenElement === document.documentElement"), "full screen")
    larger = page.evaluate("parseFloat(getComputedStyle(document.querySelector('#lesson-caption p')).fontSize)")
    assert larger >= 1.3 * normal, (normal, larger)
    page.locator("body").click(position={"x": 5, "y": 5})   # the focus leaves the button, as a presenter's would
    page.keyboard.press("ArrowLeft")
    wait_for(lambda: value(page, "#lesson-step input") != last, "the previous step")
    previous = value(page, "#lesson-step input")
    assert int(previous.split(".")[0]) == int(last.split(".")[0]) - 1
    # Keys typed into a field stay there.
    page.locator("#point input").focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_timeout(500)
    assert value(page, "#lesson-step input") == previous
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("ArrowRight")
    wait_for(lambda: value(page, "#lesson-step input") == last, "the next step")
    page.screenshot(path=os.path.join(ARTIFACTS, "presenter.png"))
    page.locator("#lesson-presenter .lesson-present").click()
    wait_for(lambda: not page.evaluate("!!document.querySelector('#lesson.lesson-presenting')"), "leaving")
    page.keyboard.press("ArrowLeft")
    page.wait_for_timeout(500)
    assert value(page, "#lesson-step input") == last   # no step keys outside the presenter view
    assert not page.errors, page.errors


def test_the_set_up_endpoint_refuses_a_bad_step_and_keeps_serving(app):
    from gradio_client import Client

    client = Client(app.url, verbose=False)
    with pytest.raises(Exception, match="lesson step|not in the list"):
        client.predict(99, "mnist-vae", api_name="/lesson_setup")
    out = client.predict(2, "dsprites-vae", api_name="/lesson_setup")   # step 3: mnist-vae, A = 1, B = 2
    assert out[0] == "mnist-vae" and (out[3], out[4]) == (1, 2), out[:5]
