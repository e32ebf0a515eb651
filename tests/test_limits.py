"""What an anonymous visitor may make the server hold (explorer/limits.py): the drawing's blobs and layers,
uploads, sessions, log lines per refused request, and new runs reaching every visitor.

The app runs as `python app.py` in a subprocess on a copy of a bundled run; memory is read from its
/proc status (VmRSS now, VmHWM the peak)."""
from __future__ import annotations

import datetime
import io
import json
import os
import shutil
import sys
import time
import uuid

import pytest

httpx = pytest.importorskip("httpx")
from gradio.state_holder import StateHolder  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import helpers_hostile as hh  # noqa: E402
from helpers_app import free_port, stop_app, wait_for_http  # noqa: E402

from explorer import limits  # noqa: E402

RUN = os.path.join(hh.REPO_ROOT, "assets", "mnist-vae")
OTHER_RUN = os.path.join(hh.REPO_ROOT, "assets", "dsprites-vae")
MB = 1024 * 1024


class App:
    def __init__(self, root: str, sandbox: str):
        self.port = free_port()
        self.sandbox = sandbox
        self.process = hh.start_app(root, self.port, sandbox)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for_http(self.url + "/", timeout=240)
        config = httpx.get(self.url + "/config").json()
        self.sketch_id = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "sketch")

    def memory_mb(self, field: str = "VmRSS") -> int:
        with open(f"/proc/{self.process.pid}/status") as f:
            return int(f.read().split(field + ":")[1].split()[0]) // 1024

    def log_lines(self) -> list[str]:
        with open(os.path.join(self.sandbox, "app.log"), encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()

    def blob(self, index, data: bytes, kind: str = "layer", blob_id: str = "b1"):
        return httpx.post(self.url + "/gradio_api/component_server/", timeout=60, files={"file": ("blob", data)},
                          data={"id": blob_id, "type": kind, "index": str(index), "session_hash": uuid.uuid4().hex,
                                "component_id": str(self.sketch_id), "fn_name": "accept_blobs"})


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    shutil.copytree(RUN, root / "mnist-vae")
    running = App(str(root), str(tmp_path_factory.mktemp("sandbox")))
    running.root = str(root)
    yield running
    stop_app(running.process)


def small_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256)).save(buffer, "PNG")
    return buffer.getvalue()


# ---- the drawing's blobs (component_server) -----------------------------------------------------------------------
def test_a_blob_with_a_huge_layer_index_is_refused_before_memory_is_spent(app):
    before = app.memory_mb()
    r = app.blob(100_000_000, small_png())
    assert r.status_code == 400 and "layer index" in r.text
    assert app.blob(0, small_png()).status_code == 200  # the page's own blob still goes in
    assert app.memory_mb() - before < 20


def test_large_blobs_are_refused_before_they_are_read(app):
    before = app.memory_mb()
    big = os.urandom(9 * MB)
    codes = {app.blob(0, big, blob_id=f"big-{i}").status_code for i in range(40)}
    assert codes == {413}
    assert app.memory_mb() - before < 20


# ---- the drawing's pictures are checked before Gradio decodes them --------------------------------------------------
def test_oversized_drawings_are_refused_before_decoding(app, tmp_path):
    huge = hh.png_zeros(str(tmp_path / "huge.png"), 13000, 13000)   # ~170 kB, 169 megapixels
    mid = hh.png_zeros(str(tmp_path / "mid.png"), 6000, 6000)
    client = Client(app.url + "/", verbose=False)
    peak = app.memory_mb("VmHWM")
    for sketch, words in (({"background": None, "layers": [], "composite": handle_file(huge)}, "too large"),
                          ({"background": None, "layers": [handle_file(mid)] * 20, "composite": None}, "20 layers")):
        with pytest.raises(Exception) as info:
            client.predict("mnist-vae", "drawing", 0, None, sketch, 0.0, "none", api_name="/reconstruct")
        assert words in str(info.value)
    assert app.memory_mb("VmHWM") - peak < 50


# ---- uploads -----------------------------------------------------------------------------------------------------
def test_uploads_past_the_clients_quota_are_refused(app):
    data = os.urandom(9 * MB)
    codes = [httpx.post(app.url + "/gradio_api/upload", files={"files": ("a.png", data)}, timeout=60,
                        headers={"X-Forwarded-For": "203.0.113.7"}).status_code for _ in range(8)]
    assert codes[:5] == [200] * 5 and set(codes[5:]) == {429}, codes


def test_the_upload_quota_bounds_each_client_and_the_whole_server():
    quota = limits.UploadQuota(window_s=600, per_client=50 * MB, total=300 * MB)
    taken = sum(quota.take(f"client-{i % 100}", 10 * MB, now=i * 0.05) is None for i in range(342))
    assert taken == 30                                     # 300 MB, whatever the number of clients
    assert quota.take("client-0", 10 * MB, now=1000.0) is None  # after the window, room again


# ---- sessions ---------------------------------------------------------------------------------------------------
def test_idle_sessions_are_dropped_and_the_count_is_capped():
    holder = StateHolder()
    now = datetime.datetime.now()
    for i in range(10):
        holder.session_data[f"s{i}"] = type("S", (), {"state_components": []})()
        holder.time_last_used[f"s{i}"] = now - datetime.timedelta(seconds=3600 if i < 7 else 10)
    assert limits.drop_idle_sessions(holder, idle_s=1800) == 7
    assert sorted(holder.session_data) == ["s7", "s8", "s9"]
    assert limits.launch_options()["state_session_capacity"] == limits.MAX_SESSIONS <= 500


def test_a_session_keeps_no_copy_of_what_it_was_sent(app):
    """Gradio keeps, per session, a copy of every output it sent (for deep links): here ~1.1 MB a session
    (the map's payload, the live views' latents), held until the session is idle for 30 minutes."""
    with httpx.Client(timeout=120) as http:
        def fresh_sessions(n: int) -> None:
            for _ in range(n):
                r = http.post(app.url + "/gradio_api/run/select_run",
                              json={"data": ["mnist-vae", None], "session_hash": uuid.uuid4().hex})
                assert r.status_code == 200, r.text[:200]
        fresh_sessions(10)
        time.sleep(1.0)
        before = app.memory_mb()
        fresh_sessions(100)
        time.sleep(1.0)
    assert app.memory_mb() - before < 30, "100 sessions should hold well under 0.3 MB each"


def test_deep_links_are_refused_and_write_nothing(app):
    """Gradio's deep-link route writes the session's copy of its outputs to disk on any GET."""
    session = uuid.uuid4().hex
    httpx.post(app.url + "/gradio_api/run/select_run", json={"data": ["mnist-vae", None], "session_hash": session},
               timeout=120)
    r = httpx.get(app.url + "/gradio_api/deep_link", params={"session_hash": session}, timeout=30)
    assert r.status_code == 404 and "no deep links" in r.text
    written = [p for p, _, _ in os.walk(app.sandbox) if os.path.basename(p) == "deep_links"]
    assert written == []


def test_no_run_history_routes(app):
    """Run history would keep every slider frame and upload in a shared classroom browser."""
    assert httpx.get(app.url + "/gradio_api/runs", timeout=30).status_code == 404
    assert httpx.get(app.url + "/gradio_api/run-history/records", timeout=30).status_code == 404


def test_small_sessions_keep_gradio_session_attributes():
    import gradio as gr
    from gradio.state_holder import SessionState

    with gr.Blocks() as demo:
        state = gr.State({"a": 1})
        gr.Textbox("x" * 100_000)
    gradio_own = SessionState.__new__(SessionState)
    limits.GRADIO_SESSION_INIT(gradio_own, demo)
    limits.small_sessions()
    ours = SessionState(demo)
    assert sorted(vars(ours)) == sorted(vars(gradio_own))
    assert ours[state._id] == {"a": 1} and ours.state_data  # gr.State values are kept
    assert len(gradio_own.config_values) > 0 and len(ours.config_values) == 0


# ---- one log line per refused request ---------------------------------------------------------------------------
def test_fifty_refused_requests_log_fifty_lines(app):
    bad = [("/point", '["mnist-vae", "abc", null]'), ("/sample", '["mnist-vae", "nope", 0, 1.0]'),
           ("/sample", '["mnist-vae", 9, NaN, 1.0]'), ("/point", '["no-such-run", 0, null]'),
           ("/interpolate", '["mnist-vae", [1], 1, "slerp", 5, null]')]
    time.sleep(0.5)
    before = len(app.log_lines())
    with httpx.Client(timeout=60) as http:
        for i in range(50):
            api, data = bad[i % len(bad)]
            r = http.post(app.url + "/gradio_api/run" + api, content='{"data": ' + data + "}",
                          headers={"Content-Type": "application/json"})
            assert r.status_code >= 400 or "error" in r.text, r.text[:200]
    time.sleep(1.0)
    new = app.log_lines()[before:]
    assert not any("Traceback" in line for line in new), "\n".join(new[:40])
    assert len(new) <= 50, "\n".join(new)


# ---- new runs reach every visitor -------------------------------------------------------------------------------
def test_a_run_found_by_one_visitor_is_there_for_all(app):
    other = Client(app.url + "/", verbose=False)   # a visitor whose page was open before the run appeared
    shutil.copytree(OTHER_RUN, os.path.join(app.root, "dsprites-vae"))
    try:
        run_dd, _ = Client(app.url + "/", verbose=False).predict(api_name="/rescan")
        assert "dsprites-vae" in json.dumps(run_dd)
        card = other.predict("dsprites-vae", api_name="/select_run")[0]
        assert "dsprites" in card
    finally:
        shutil.rmtree(os.path.join(app.root, "dsprites-vae"), ignore_errors=True)


def test_the_app_answers_after_all_this(app):
    assert httpx.get(app.url + "/", timeout=30).status_code == 200
    assert app.process.poll() is None
