"""The map in headless Chromium on loopback: a click to its image shown, a hover to its preview shown.

    python benchmarks/map_click.py                          # the bundled runs in assets/, the first run shown
    python benchmarks/map_click.py --clicks 60 --hovers 60 --run smileys-btcvae

Serves the app (explorer.ui.build_app, torch on one thread as app.py serves) on 127.0.0.1 and opens it in
headless Chromium at 1440x900, one user. Measures, with the page's own clock (performance.now and the mouse
events' timeStamp):
  * click: from the mouse button going down on a map point to the Point tab's new image loaded in the page
    (its <img> complete), over N clicks on points far apart; and the POST requests each click sent;
  * hover: from the mouse arriving on a point to its thumbnail drawn in the map's preview box (the next
    animation frame after the drawing, so the preview is on screen), over N points.
Prints one JSON object with p50 / p95 / max of each.

Targets: click to image p95 <= 200 ms, hover to preview p95 <= 50 ms.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))

from browser_pages import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from helpers_app import free_port, torch_threads, wait_quiet  # noqa: E402

TARGETS = {"click_to_image_p95_ms": 200.0, "hover_to_preview_p95_ms": 50.0}

# Arms one measurement: resolves to ms from the next pointerdown on the map to the Point tab's next image loaded.
ARM_CLICK = """() => {
  const plot = document.querySelector('#latent-map .vae-map-plot');
  const img = () => document.querySelector('#pt-image img');
  const before = img() ? img().src : null;
  let start = null;
  window.addEventListener('pointerdown', (e) => { start = e.timeStamp; }, {capture: true, once: true});
  window.__click = new Promise((resolve) => {
    const check = () => {
      const i = img();
      if (start !== null && i && i.src !== before && i.complete && i.naturalWidth > 0) resolve(performance.now() - start);
      else if (start !== null && performance.now() - start > 10000) resolve(null);
      else setTimeout(check, 1);
    };
    check();
  });
}"""

# Arms one measurement: resolves to ms from the next mousemove on the map to the preview drawn for another
# point and painted (the animation frame after the drawing).
ARM_HOVER = """() => {
  const plot = document.querySelector('#latent-map .vae-map-plot');
  const preview = document.querySelector('.vae-map-preview');
  const before = preview.dataset.row;
  let start = null;
  // pointermove comes first of a move's events, and the map draws its preview on it: listen on the window
  // in the capture phase, before the map's own listener.
  window.addEventListener('pointermove', (e) => { start = e.timeStamp; }, {capture: true, once: true});
  window.__hover = new Promise((resolve) => {
    const observer = new MutationObserver(() => {
      if (start === null || preview.style.display !== 'block' || preview.dataset.row === before) return;
      observer.disconnect();
      requestAnimationFrame(() => resolve(performance.now() - start));
    });
    observer.observe(preview, {attributes: true});
    setTimeout(() => { observer.disconnect(); resolve(null); }, 5000);
  });
}"""

POSITION = """(row) => {
  const gd = document.querySelector('#latent-map .vae-map-plot');
  const fl = gd._fullLayout, box = gd.getBoundingClientRect();
  for (const tr of gd.data) {
    if (!tr.customdata) continue;
    const i = tr.customdata.indexOf(row);
    if (i >= 0) return [box.left + fl._size.l + fl.xaxis.l2p(tr.x[i]), box.top + fl._size.t + fl.yaxis.l2p(tr.y[i])];
  }
  return null;
}"""


def stats(ms: list) -> dict:
    done = sorted(m for m in ms if m is not None)
    if not done:
        return {"n": 0, "missed": len(ms)}

    def pct(p):
        return done[min(len(done) - 1, max(0, int(round(p / 100.0 * (len(done) - 1)))))]

    return {"n": len(done), "missed": len(ms) - len(done), "p50_ms": round(pct(50), 1), "p95_ms": round(pct(95), 1),
            "mean_ms": round(statistics.fmean(done), 1), "max_ms": round(done[-1], 1)}


def spread_rows(page, n: int) -> list:
    """n rows whose points lie far apart on screen, each far from the one before (so every click and hover
    lands on its own point and changes the picture)."""
    total = page.evaluate("document.querySelector('#latent-map .vae-map-plot').data"
                          ".reduce((s, t) => s + (t.customdata ? t.customdata.length : 0), 0)")
    step = max(1, total // (4 * n))
    candidates = [(r, page.evaluate(POSITION, r)) for r in range(0, total, step)]
    candidates = [(r, p) for r, p in candidates if p]
    rows, last = [], None
    while len(rows) < n and candidates:
        pick = max(candidates, key=lambda c: 0 if last is None else (c[1][0] - last[0]) ** 2 + (c[1][1] - last[1]) ** 2)
        candidates.remove(pick)
        rows.append(pick)
        last = pick[1]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=os.path.join(REPO, "assets"))
    ap.add_argument("--run", default=None, help="the run to show (default: the first one listed)")
    ap.add_argument("--clicks", type=int, default=40)
    ap.add_argument("--hovers", type=int, default=40)
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from explorer.ui import build_app, launch_options

    demo = build_app([args.runs])
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with torch_threads(1):
        demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **launch_options(demo))
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                page.goto(url)
                # The page opens on the Lesson tab; the map's clicks show their pictures in the Point tab.
                page.locator("#tabs button[role=tab]", has_text="Point").first.click(timeout=120_000)
                page.wait_for_selector("#pt-image img", timeout=120_000)
                if args.run:
                    page.locator("#run input").click()
                    page.get_by_role("option", name=args.run, exact=True).click()
                    page.wait_for_function("(n) => document.querySelector('#card').innerText.includes(n)", arg=args.run)
                wait_quiet(page, quiet_s=3.0)
                run = page.locator("#run input").input_value()
                posts, answers = [], []
                page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
                # The server's share: from the request sent to its answer received (Resource Timing, ms).
                page.on("requestfinished", lambda r: answers.append(r.timing["responseEnd"] - r.timing["requestStart"])
                        if r.method == "POST" else None)

                hover_ms = []
                for row, (x, y) in (spread_rows(page, args.hovers + 1) if args.hovers else []):
                    page.evaluate(ARM_HOVER)
                    page.mouse.move(x, y)
                    hover_ms.append(page.evaluate("window.__hover"))
                hover_posts = len(posts)
                hover_ms = hover_ms[1:]  # the first waits for the sprite sheet if it was not loaded yet

                click_ms, per_click = [], []
                answers.clear()
                for row, (x, y) in spread_rows(page, args.clicks + 2):
                    n = len(posts)
                    page.evaluate(ARM_CLICK)
                    page.mouse.click(x, y)
                    click_ms.append(page.evaluate("window.__click"))
                    page.wait_for_timeout(150)  # let the click's marks land before the next one
                    per_click.append(len(posts) - n)
                browser.close()
        finally:
            demo.close()
    result = {
        "run": run,
        "click_to_image": stats(click_ms[2:]),  # the first clicks warm the decoder and the image cache
        "posts_per_click": sorted(set(per_click)),
        "click_requests_sent_to_answered": stats(answers),
        "hover_to_preview": stats(hover_ms),
        "posts_while_hovering": hover_posts,
        "targets": TARGETS,
        "cpu_cores": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
