"""The app serves each run's decoder.onnx, and only that file of a run folder: also for a run that a later
rescan finds ("Look for new runs"), since Gradio reads its static paths at each request."""
from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request

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


def test_no_path_can_close_the_preload_script():
    head = ui_decode.preload_head("gradio_api/file=/runs/a</script><script>alert(1)</script>/decoder.onnx")
    assert head.count("</script>") == 1 and head.endswith("</script>")
