"""Live sliders decoded in the browser against the server path, in headless Chromium on loopback.

    python benchmarks/browser_decode.py                      # the bundled runs in assets/, the first run shown
    python benchmarks/browser_decode.py --positions 100 --browser-only --runs assets/smileys-btcvae

Serves the app (explorer.ui.build_app, torch on one thread as app.py serves) on 127.0.0.1 and opens it in
headless Chromium with every other host blocked. Measures:
  * first load: bytes downloaded (sum of response bodies and headers as received: Playwright's body size is
    Chromium's encoded length, so a compressed answer counts its compressed bytes) and the part due to browser
    decoding (latent_decoder.js, the vendored onnxruntime-web, decoder.onnx; each file's bytes, with its
    Content-Encoding if any, in `browser_decoding_files`); the time from navigation to the
    first frame the interpolation view draws itself (the moment its slider is live in the browser), for a
    visitor after the first one (`first_interactive_frame_s`, a fresh browser context: nothing cached) and
    for the very first (`..._cold_s`: the server also loads the run from disk), and when Gradio's page
    took the click on the tab (`tabs_clickable_s`: the part of the first frame that is Gradio's start-up);
  * per-frame time while the interpolation slider moves through N positions: from the slider's input event
    to the frame drawn on the canvas (browser), and, in a second page without WebAssembly (the fallback), to
    the server's new picture loaded in the page; p50 / p95 of each, and the requests each drag sent.
Prints one JSON object. `--browser-only` skips the drag through the server (quicker before/after runs).

Targets on 2 CPU cores: per-frame p95 <= 8 ms (browser), first interactive frame <= 2 s, browser decoding
adds <= 5 MB to the first load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import urllib.parse

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

from browser_pages import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from helpers_app import free_port, torch_threads, wait_quiet  # noqa: E402

TARGETS = {"browser_frame_p95_ms": 8.0, "first_interactive_frame_s": 2.0, "browser_decoding_first_load_mb": 5.0}
BROWSER_DECODING_FILES = ("latent_decoder.js", "onnxruntime-web", "decoder.onnx")

# Moves the slider through `positions` values one at a time, each after the last one's frame is shown;
# resolves to the per-frame times in ms. `shown()` says whether the frame for the current value is there.
DRAG = """async ({positions, server}) => {
  const range = document.querySelector('#t input[type=range]');
  const view = document.querySelector('#frame-live [data-mode]');
  const img = () => document.querySelector('#frame img');
  const times = [];
  for (let k = 0; k < positions; k++) {
    const before = server ? (img() && img().src) : view.dataset.frames;
    const start = performance.now();
    range.value = String((0.01 + 0.98 * k / (positions - 1)).toFixed(2));
    range.dispatchEvent(new Event('input', {bubbles: true}));
    await new Promise((resolve) => {
      const check = () => {
        const i = img();
        const done = server ? (i && i.src !== before && i.complete) : view.dataset.frames !== before;
        if (done) resolve(); else setTimeout(check, 0);
      };
      check();
    });
    times.push(performance.now() - start);
    await new Promise((r) => setTimeout(r, 5));   // a frame apart, as a hand moves
  }
  return times;
}"""


def stats(ms: list) -> dict:
    ordered = sorted(ms)
    return {"p50_ms": round(statistics.median(ordered), 2),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 2),
            "max_ms": round(ordered[-1], 2), "n": len(ordered)}


def open_page(browser, url: str, init_script: str = ""):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    host = urllib.parse.urlsplit(url).netloc
    context.route("**/*", lambda route: route.continue_() if urllib.parse.urlsplit(route.request.url).netloc == host
                  else route.abort())
    if init_script:
        context.add_init_script(init_script)
    page = context.new_page()
    page.responses, page.requests, page.errors = [], [], []
    page.on("requestfinished", lambda r: page.responses.append(r))
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    return page


def view_state(page) -> dict:
    return page.evaluate("() => { const e = document.querySelector('#frame-live [data-mode]');"
                         " return e ? {...e.dataset} : {}; }")


def wait_for(page, condition, timeout: float = 60.0) -> None:
    start = time.time()
    while not condition():
        if time.time() - start > timeout:
            raise TimeoutError("the page did not get there in time")
        page.wait_for_timeout(20)


def first_load(browser, url: str) -> tuple[dict, object]:
    page = open_page(browser, url)
    page.goto(url)
    # The live view draws once its tab is shown: open it as soon as the tabs are there.
    page.locator("#tabs button[role=tab]", has_text="Interpolate").first.click(timeout=60_000)
    tabs_s = page.evaluate("performance.now()") / 1000.0   # Gradio's page is up: its tabs take clicks
    wait_for(page, lambda: view_state(page).get("mode") == "browser" and int(view_state(page).get("frames", 0)) > 0)
    first_frame_s = float(view_state(page)["first"]) / 1000.0
    # Let the first views (strip, grids, samples: the server's heavy work) finish, so that the drag below
    # measures decoding, not a machine busy with them.
    wait_quiet(page, requests=page.requests)
    total = decoding = 0
    files = {}
    for r in page.responses:
        sizes = r.sizes()
        n = sizes["responseBodySize"] + sizes["responseHeadersSize"]
        total += n
        if any(name in r.url for name in BROWSER_DECODING_FILES):
            decoding += n
            name = urllib.parse.unquote(urllib.parse.urlsplit(r.url).path).rsplit("/", 1)[-1]
            encoding = r.response().headers.get("content-encoding")
            files[name + (f" ({encoding})" if encoding else "")] = round(n / 1e6, 3)
    return {"first_load_mb": round(total / 1e6, 2), "browser_decoding_first_load_mb": round(decoding / 1e6, 2),
            "browser_decoding_files": files,
            "first_interactive_frame_s": round(first_frame_s, 2), "tabs_clickable_s": round(tabs_s, 2)}, page


def drag(page, positions: int, server: bool) -> dict:
    before = len(page.requests)
    times = page.evaluate(DRAG, {"positions": positions, "server": server})
    sent = [u for u in page.requests[before:] if "/gradio_api/" in u]
    return {**stats(times), "requests_to_server": len(sent)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=os.path.join(REPO, "assets"))
    parser.add_argument("--positions", type=int, default=200)
    parser.add_argument("--browser-only", action="store_true",
                        help="skip the fallback drag through the server (quicker before/after comparisons)")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    from explorer.ui import build_app, launch_options

    demo = build_app([args.runs])
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with torch_threads(1), sync_playwright() as p:
        demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **launch_options(demo))
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            cold, page = first_load(browser, url)   # the first visitor: the server loads the run too
            page.context.close()
            load, page = first_load(browser, url)
            load["first_interactive_frame_cold_s"] = cold["first_interactive_frame_s"]
            browser_drag = drag(page, args.positions, server=False)
            errors = list(page.errors)
            page.context.close()
            server_drag, note = {}, None
            if not args.browser_only:
                server_drag, note = fallback_drag(browser, url, args.positions, errors)
        finally:
            browser.close()
            demo.close()
    result = {"run": demo.points.run_choices()[0], "positions": args.positions, **load,
              "browser_frame": browser_drag, "server_frame": server_drag, "fallback_note": note,
              "page_errors": errors, "targets": TARGETS}
    result["targets_met"] = (browser_drag["p95_ms"] <= TARGETS["browser_frame_p95_ms"]
                             and load["first_interactive_frame_s"] <= TARGETS["first_interactive_frame_s"]
                             and load["browser_decoding_first_load_mb"] <= TARGETS["browser_decoding_first_load_mb"])
    print(json.dumps(result))
    return 0


def fallback_drag(browser, url: str, positions: int, errors: list) -> tuple[dict, str]:
    """The same drag in a page without WebAssembly: through the server. Returns its stats and the note."""
    fallback = open_page(browser, url, "delete window.WebAssembly;")
    fallback.goto(url)
    fallback.locator("#tabs button[role=tab]", has_text="Interpolate").first.click(timeout=60_000)
    wait_for(fallback, lambda: view_state(fallback).get("mode") == "server" and fallback.locator("#frame img").count() > 0)
    server_drag = drag(fallback, positions, server=True)
    note = fallback.locator("#vae-live-page-note").inner_text()
    errors += fallback.errors
    fallback.context.close()
    return server_drag, note


if __name__ == "__main__":
    sys.exit(main())
