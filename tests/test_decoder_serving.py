"""The app serves each run's decoder.onnx, and only that file of a run folder: also for a run that a later
rescan finds ("Look for new runs"), since Gradio reads its static paths at each request. The runtime's wasm
goes brotli-encoded to a client that takes br, and as the vendored .gz to any other; the vendored files are
those their README lists."""
from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from typing import NamedTuple

import brotli
import pytest

from helpers_app import free_port, tiny_runs_root

from explorer import ui_decode
from training.export import export_decoder_file
from training.onnx_decoder import decoder_weight_storage
from training.runfolder import DECODER_FILE


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


class Answer(NamedTuple):
    status: int
    headers: dict   # lower-case names
    body: bytes


def fetch(url: str, accept_encoding: str | None = None, method: str = "GET", **headers) -> Answer:
    """The raw answer (urllib decodes no Content-Encoding); Accept-Encoding as given, or none at all."""
    if accept_encoding is not None:
        headers["Accept-Encoding"] = accept_encoding
    request = urllib.request.Request(url, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return Answer(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return Answer(e.code, {k.lower(): v for k, v in e.headers.items()}, b"")


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from explorer.ui import build_app, launch_options

    root = str(tmp_path_factory.mktemp("runs"))
    shutil.copytree(os.path.join(tiny_runs_root(), "vae"), os.path.join(root, "first"))
    demo = build_app([root])
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **launch_options(demo))
    yield demo, root, f"http://127.0.0.1:{port}/"
    demo.close()


def test_a_run_found_by_a_rescan_gets_its_decoder_served(served):
    demo, root, url = served
    later = os.path.join(root, "later")
    shutil.copytree(os.path.join(root, "first"), later)
    # This run's decoder stores float16 weights, as the bundled runs' do: the app serves it like any other.
    export_decoder_file(later, decoder_weights="float16")
    path = os.path.join(later, DECODER_FILE)
    assert get(url + ui_decode.file_url(os.path.abspath(path)))[0] != 200   # not served before the rescan

    assert "later" in demo.points.registry.rescan()
    recipe = ui_decode.recipe(demo.points.run("later"), "attribute", z=[0.0], v=[0.0])
    assert recipe["model"] == ui_decode.file_url(os.path.abspath(path))
    status, body = get(url + recipe["model"])
    assert status == 200
    with open(path, "rb") as f:
        assert body == f.read()
    assert decoder_weight_storage(body) == "float16"
    # Only the decoder: the rest of the run folder stays private.
    for name in os.listdir(later):
        if name != DECODER_FILE and os.path.isfile(os.path.join(later, name)):
            assert get(url + ui_decode.file_url(os.path.abspath(os.path.join(later, name))))[0] != 200, name


def test_the_first_page_carries_the_default_runs_recipes_and_preloads_its_decoder(served):
    demo, root, url = served
    status, body = get(url + "config")
    assert status == 200
    model = ui_decode.file_url(os.path.abspath(os.path.join(root, "first", DECODER_FILE)))
    assert model.encode() in body   # a live view's starting value names the default run's decoder
    assert demo.page_head and model in demo.page_head and "loadRuntime" in demo.page_head


def test_the_page_asks_the_browser_to_preload_the_runtime_and_the_first_decoder(served):
    _, root, url = served
    page = fetch(url, CHROMIUM_ACCEPTS)
    assert page.status == 200 and page.headers["content-type"].startswith("text/html")
    links = [part.strip() for part in page.headers["link"].split(",")]
    model = ui_decode.file_url(os.path.abspath(os.path.join(root, "first", DECODER_FILE)))
    # Exactly the URLs the page's scripts ask for, in the request modes they use, so nothing is fetched twice.
    assert f"<{ui_decode.file_url(ui_decode.WASM_GZ)}>; rel=preload; as=fetch; crossorigin" in links
    assert f"<{model}>; rel=preload; as=fetch; crossorigin" in links
    module = ui_decode.file_url(os.path.join(ui_decode.RUNTIME_DIR, ui_decode.RUNTIME_MODULE))
    assert f"<{module}>; rel=modulepreload" in links
    with open(os.path.join(ui_decode.STATIC_DIR, "latent_decoder.js"), encoding="utf-8") as f:
        assert f"const MODULE = '{ui_decode.RUNTIME_MODULE}';" in f.read()
    # Only the page: an API answer, a file or the config carry no preloads.
    for other in ("config", "gradio_api/info", ui_decode.file_url(ui_decode.WASM_GZ)):
        assert "link" not in fetch(url + other, CHROMIUM_ACCEPTS).headers, other


@pytest.mark.parametrize("path, root, is_page", [
    ("/", "", True), ("", "", True), ("/sub/", "/sub", True), ("/sub", "/sub", True),
    ("/config", "", False), ("/sub/config", "/sub", False), ("/gradio_api/file=/x", "", False)])
def test_only_the_page_itself_is_a_page_request(path, root, is_page):
    assert ui_decode.is_page_request({"type": "http", "method": "GET", "path": path, "root_path": root}) is is_page
    assert not ui_decode.is_page_request({"type": "http", "method": "POST", "path": path, "root_path": root})


def test_no_path_can_close_the_preload_script():
    head = ui_decode.preload_head("gradio_api/file=/runs/a</script><script>alert(1)</script>/decoder.onnx")
    assert head.count("</script>") == 1 and head.endswith("</script>")


# ---- the runtime's wasm, brotli-encoded ----------------------------------------------------------------------
CHROMIUM_ACCEPTS = "gzip, deflate, br, zstd"   # what Chromium sends, also to http://127.0.0.1
CACHE_HEADERS = ("cache-control", "expires", "etag", "last-modified")


def test_a_client_that_takes_brotli_gets_the_wasm_as_br(served):
    _, _, url = served
    wasm_url = url + ui_decode.file_url(ui_decode.WASM_GZ)
    plain = fetch(wasm_url, "gzip, deflate")
    br = fetch(wasm_url, CHROMIUM_ACCEPTS)
    assert plain.status == br.status == 200
    assert plain.body == read(ui_decode.WASM_GZ) and "content-encoding" not in plain.headers

    assert br.headers["content-encoding"] == "br"
    assert br.headers["content-type"] == "application/wasm"
    assert "accept-encoding" in br.headers["vary"].lower()
    assert int(br.headers["content-length"]) == len(br.body) == os.path.getsize(ui_decode.WASM_BR)
    assert len(br.body) < len(plain.body)
    assert brotli.decompress(br.body) == gzip.decompress(plain.body)
    # Cached at least as well as Gradio's answer for the .gz: every caching header it sends, this one sends.
    assert [h for h in CACHE_HEADERS if h in plain.headers and h not in br.headers] == []
    assert br.headers.get("etag") != plain.headers.get("etag")   # two representations, two validators


@pytest.mark.parametrize("accept_encoding", [None, "identity", "gzip, deflate", "gzip, br;q=0", "brotli, gzip"])
def test_a_client_that_does_not_take_brotli_gets_the_gz(served, accept_encoding):
    _, _, url = served
    answer = fetch(url + ui_decode.file_url(ui_decode.WASM_GZ), accept_encoding)
    assert answer.status == 200 and answer.body == read(ui_decode.WASM_GZ)
    assert "content-encoding" not in answer.headers


def test_head_and_range_requests_go_to_gradio(served):
    _, _, url = served
    wasm_url = url + ui_decode.file_url(ui_decode.WASM_GZ)
    head = fetch(wasm_url, CHROMIUM_ACCEPTS, method="HEAD")
    assert head.status == 200 and int(head.headers["content-length"]) == os.path.getsize(ui_decode.WASM_GZ)
    assert "content-encoding" not in head.headers
    part = fetch(wasm_url, CHROMIUM_ACCEPTS, Range="bytes=0-3")
    assert part.status == 206 and part.body == read(ui_decode.WASM_GZ)[:4]


def test_only_the_vendored_wasm_is_answered_from_the_br(served, tmp_path):
    demo, root, url = served
    # A file of the same name elsewhere (here beside the runs): Gradio refuses it, and so does the middleware.
    decoy = os.path.join(root, os.path.basename(ui_decode.WASM_GZ))
    shutil.copyfile(ui_decode.WASM_GZ, decoy)
    outside = tmp_path / os.path.basename(ui_decode.WASM_GZ)
    shutil.copyfile(ui_decode.WASM_GZ, outside)
    similar = [decoy, str(outside), ui_decode.WASM_GZ + ".gz", ui_decode.WASM_GZ[:-3],
               os.path.join(ui_decode.STATIC_DIR, os.path.basename(ui_decode.WASM_GZ)),
               os.path.join(ui_decode.RUNTIME_DIR, "missing", "..", "..", os.path.basename(ui_decode.WASM_GZ))]
    for path in similar:
        answer = fetch(url + ui_decode.file_url(path), CHROMIUM_ACCEPTS)
        assert "content-encoding" not in answer.headers, path
        assert answer.body != read(ui_decode.WASM_BR), path
    # Another route that ends in the same path is not the file route.
    answer = fetch(url + "gradio_api/other/" + ui_decode.file_url(ui_decode.WASM_GZ), CHROMIUM_ACCEPTS)
    assert answer.status != 200 and "content-encoding" not in answer.headers
    # The same file by another spelling of its path is that file: the .br.
    detour = os.path.join(ui_decode.RUNTIME_DIR, "..", "onnxruntime-web", os.path.basename(ui_decode.WASM_GZ))
    assert fetch(url + ui_decode.file_url(detour), CHROMIUM_ACCEPTS).headers.get("content-encoding") == "br"


@pytest.mark.parametrize("header, takes", [("br", True), ("gzip, deflate, br, zstd", True), ("BR;q=0.5", True),
                                           ("br;q=0", False), ("br;q=0.0, gzip", False), ("brotli", False),
                                           ("gzip", False), ("", False), ("br;q=x", False)])
def test_accepts_brotli(header, takes):
    assert ui_decode.accepts_brotli(header) is takes


def test_behind_a_path_prefix_the_same_file_is_answered():
    app = ui_decode.BrotliRuntime(None)
    path = "/" + urllib.parse.unquote(ui_decode.file_url(ui_decode.WASM_GZ))   # ASGI paths come decoded
    headers = [(b"accept-encoding", b"br")]
    assert app.answers({"type": "http", "method": "GET", "path": path, "headers": headers})
    assert app.answers({"type": "http", "method": "GET", "path": "/space" + path, "root_path": "/space",
                        "headers": headers})
    assert not app.answers({"type": "http", "method": "GET", "path": "/space" + path, "headers": headers})


# ---- the vendored files ----------------------------------------------------------------------------------------
def test_the_vendored_runtime_is_what_its_readme_lists():
    with open(os.path.join(ui_decode.RUNTIME_DIR, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    rows = dict((name, (int(size), sha)) for name, size, sha in
                re.findall(r"^\| `([^`]+)` \| (\d+) \| `([0-9a-f]{64})` \|", readme, flags=re.M))
    files = sorted(n for n in os.listdir(ui_decode.RUNTIME_DIR) if n != "README.md")
    assert sorted(rows) == files
    for name in files:
        data = read(os.path.join(ui_decode.RUNTIME_DIR, name))
        assert (len(data), hashlib.sha256(data).hexdigest()) == rows[name], name
        assert len(data) < 10_000_000, name   # a tracked file's limit
    # Both compressed forms hold the same binary, the one the README names as the package's.
    wasm = gzip.decompress(read(ui_decode.WASM_GZ))
    assert brotli.decompress(read(ui_decode.WASM_BR)) == wasm and wasm[:4] == b"\0asm"
    assert f"({len(wasm)} bytes, sha256 `{hashlib.sha256(wasm).hexdigest()}`)" in readme
