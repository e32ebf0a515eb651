"""What the browser benchmarks share: the Chromium they drive and how they wait for a Gradio page to settle."""
from __future__ import annotations

import os
import time

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def wait_quiet(page, quiet_s: float = 2.0, timeout: float = 120.0) -> None:
    """Until the page has sent nothing to the app for quiet_s and no output is pending (its first views in).
    Playwright's "networkidle" never comes in a Gradio page: the queue's event stream and heartbeat stay open."""
    last = [time.time()]
    page.on("request", lambda r: last.__setitem__(0, time.time()) if "/gradio_api/" in r.url else None)
    start = time.time()
    while time.time() - start < timeout:
        busy = page.evaluate("document.querySelectorAll('.wrap.pending, .wrap.generating').length")
        if not busy and time.time() - last[0] >= quiet_s:
            return
        page.wait_for_timeout(200)
