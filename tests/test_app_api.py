"""The explorer app through its HTTP API: every named endpoint driven with gradio_client against a running
server, on tiny real runs (trained with training.trainer.train, exported with training.export).

Checks that outputs have the right shapes, change when their inputs change, agree with each other where
they must (t = 0 of an interpolation is A's reconstruction, strength 0 is the input's reconstruction,
A − A + C is C), and that bad input gives a clear error while the server keeps serving.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

from helpers_app import free_port, tiny_runs_root, torch_threads  # noqa: E402

from explorer import ui_map  # noqa: E402

ENDPOINTS = {
    "/select_run", "/map", "/point", "/selection", "/reconstruct", "/sample", "/interpolate",
    "/interpolate_frame", "/attribute", "/attribute_edit", "/analogy", "/disentanglement", "/live_traversal",
    "/compare", "/download_samples", "/download_traversal", "/download_gif", "/download_latents",
    "/download_attributes", "/rescan",
}


# ---- fixtures ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def runs_root():
    """Tiny real runs: `vae` (evaluated), `vq` (no prior), `vq-prior` (tiny PixelCNN); see helpers_app."""
    return tiny_runs_root()


@pytest.fixture(scope="module")
def app(runs_root):
    from explorer.ui import build_app, launch_options

    demo = build_app([runs_root])
    port = free_port()
    with torch_threads(1):  # as app.py serves
        demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **launch_options(demo))
        yield demo, f"http://127.0.0.1:{port}/"
        demo.close()


@pytest.fixture(scope="module")
def client(app):
    return Client(app[1], verbose=False)


def fresh_client(app) -> Client:
    """A new browser session (its own gr.State)."""
    return Client(app[1], verbose=False)


def value(output):
    """An output's value: component updates (e.g. an image that also becomes visible) arrive as dicts."""
    return output["value"] if isinstance(output, dict) and "value" in output else output


def pixels(path) -> np.ndarray:
    with Image.open(value(path)) as im:
        return np.asarray(im.convert("RGB"))


def close(a: np.ndarray, b: np.ndarray, tol: int = 2) -> bool:
    """Same picture up to rounding (a decode of a latent that differs in the last float bit)."""
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= tol


def tiles(row: np.ndarray, n: int, pad: int = 3) -> list:
    """The n tiles of a one-row grid (figures.grid: enlarged tiles with `pad` px lines around each)."""
    size = row.shape[0] - 2 * pad
    return [row[pad: pad + size, pad + i * (size + pad): pad + i * (size + pad) + size] for i in range(n)]


def call(client, *args, api):
    return client.predict(*args, api_name=api)


def expect_error(client, *args, api, match=None):
    """The call fails with a message containing `match` (or one of several: a widget's own range/choice
    check in Gradio answers before the handler, with its own wording)."""
    with pytest.raises(Exception) as info:
        client.predict(*args, api_name=api)
    if match:
        options = (match,) if isinstance(match, str) else match
        assert any(m.lower() in str(info.value).lower() for m in options), str(info.value)
    return str(info.value)


# ---- the API surface ----------------------------------------------------------------------------------------
def test_every_operation_is_a_named_endpoint(client):
    named = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert ENDPOINTS <= named, ENDPOINTS - named
    assert not [n for n in named if n.startswith("/private")], "private helpers must not be in the API"


def test_select_run_gives_card_map_and_choices(client):
    out = call(client, "vae", api="/select_run")
    card, map_update, colour, attribute = out[:4]
    assert "vae" in card and "smileys" in card and "latent" in card
    payload = ui_map.unpacked(map_update["value"])
    assert payload["n"] == 300 and len(payload["x"]) == len(payload["y"]) == 300
    assert list(payload["index"]) == list(range(300)) and np.isfinite(payload["x"]).all()
    assert colour["value"] == "smile" and "glasses" in [c[0] for c in colour["choices"]]
    assert "smile" in [c[0] for c in attribute["choices"]]
    *_, sample_note, compare = out
    assert "N(0" in sample_note  # sample note of a VAE
    assert "vae" not in [c[0] for c in compare["choices"]]  # a run is not compared with itself
    vq = call(client, "vq", api="/select_run")
    assert "no prior" in vq[-2].lower() and "train-prior" in vq[-2]


def test_a_run_without_exported_latents_is_shown_with_what_is_missing(client):
    out = call(client, "vae-not-exported", api="/select_run")
    assert "no latent table" in out[0] and "python -m training export" in out[0]
    assert "no exported latents" in out[1]["value"]["message"].lower()
    grid = pixels(call(client, "vae-not-exported", 9, 0, 1.0, api="/sample"))  # the prior still samples
    assert grid.std() > 0
    expect_error(client, "vae-not-exported", 0, api="/point", match="no exported latents")
    expect_error(client, "vae-not-exported", "smile", False, 0, 1.0, api="/attribute_edit", match="attribute")


def test_map_colours_and_payload(client):
    packed = call(client, "vae", "glasses", api="/map")["value"]
    assert isinstance(packed["x"], str) and packed["packed"]["color"] == "int32"  # what the page receives
    binary = ui_map.unpacked(packed)
    assert binary["color_kind"] == "binary" and len(binary["color"]) == 300 and set(binary["color"]) == {0, 1}
    assert {e["label"] for e in binary["legend"]} == {"no glasses", "glasses"}  # named from the dataset
    continuous = call(client, "vae", "z0", api="/map")["value"]
    assert continuous["color_kind"] == "continuous" and continuous["color_range"][0] < continuous["color_range"][1]
    assert call(client, "vae", "none", api="/map")["value"]["color_kind"] == "none"
    expect_error(client, "vae", "no-such-label", api="/map", match="cannot colour")
    assert len(json.dumps(packed)) < 100_000  # 300 points: tens of kB


# ---- points, selection ------------------------------------------------------------------------------------
def test_point_shows_image_reconstruction_and_neighbours(client):
    image, recon, info, neighbours = call(client, "vae", 5, api="/point")
    assert "point 5" in info and "smile" in info
    a, r = pixels(image), pixels(recon)
    assert a.shape == r.shape and a.shape[0] == 192 and a.shape[2] == 3  # 32 px enlarged 6 times for display
    strip = pixels(neighbours)
    assert strip.shape[:2] == (2 * 122 + 4, 4 * 100 + 4)  # 8 captioned 96-px thumbnails (32 px, 3 times)
    other = call(client, "vae", 6, api="/point")
    assert not np.array_equal(pixels(other[0]), a)
    assert not np.array_equal(pixels(other[1]), r)


def test_selection_shows_images_and_decoded_mean(client):
    grid, mean, info = call(client, "vae", "3, 10, 42", api="/selection")
    assert "3 points selected" in info and pixels(grid).shape[1] > pixels(grid).shape[0] * 2  # one row of 3
    assert pixels(mean).ndim == 3
    grid2, mean2, _ = call(client, "vae", "7, 8", api="/selection")
    assert pixels(grid2).shape[1] < pixels(grid).shape[1] and not np.array_equal(pixels(mean), pixels(mean2))
    many, _, many_info = call(client, "vae", ", ".join(str(i) for i in range(100)), api="/selection")
    assert "100 points selected" in many_info and "first 24" in many_info
    assert pixels(many).shape[:2] == (5 * 122 + 4, 5 * 100 + 4)  # 24 captioned 96-px thumbnails, rows of 5
    empty = call(client, "vae", "", api="/selection")
    assert empty[0] is None and "nothing selected" in empty[2].lower()
    expect_error(client, "vae", "1, x", api="/selection", match="whole number")
    expect_error(client, "vae", "1, 99999", api="/selection", match="between")


# ---- reconstruction ---------------------------------------------------------------------------------------
def _png(tmp_path, name, image: Image.Image, **save) -> str:
    path = tmp_path / name
    image.save(path, **save)
    return str(path)


def test_reconstruct_dataset_point_with_noise_and_masks(client):
    plain = call(client, "vae", "dataset point", 4, None, None, 0.0, "none", api="/reconstruct")
    x_plain, y_plain, posterior, info = plain[:4]
    assert "point 4" in info and posterior is not None and pixels(posterior).shape[1] > 100
    noisy = call(client, "vae", "dataset point", 4, None, None, 0.5, "none", api="/reconstruct")
    masked = call(client, "vae", "dataset point", 4, None, None, 0.0, "left half", api="/reconstruct")
    assert not np.array_equal(pixels(noisy[0]), pixels(x_plain))
    m = pixels(masked[0])
    assert m[:, : m.shape[1] // 2 - 4].max() == 0  # the hidden half is black
    assert not np.array_equal(pixels(masked[1]), pixels(y_plain))
    expect_error(client, "vae", "dataset point", 4, None, None, 2.0, "none", api="/reconstruct",
                 match=("noise", "maximum"))
    expect_error(client, "vae", "dataset point", 4, None, None, 0.0, "everything", api="/reconstruct",
                 match=("mask", "choices"))


def test_reconstruct_uploads_of_many_kinds(client, tmp_path):
    rng = np.random.default_rng(0)
    rgba = Image.fromarray(rng.integers(0, 255, (50, 70, 4), dtype=np.uint8), "RGBA")
    grey16 = Image.fromarray((rng.integers(0, 65535, (40, 40))).astype(np.uint16))
    frames = [Image.fromarray(np.full((30, 30), v, np.uint8)) for v in (0, 255)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    for path in (_png(tmp_path, "rgba.png", rgba), _png(tmp_path, "grey16.png", grey16), str(gif)):
        x, y, _, info, *_ = call(client, "vae", "upload", 0, handle_file(path), None, 0.0, "none", api="/reconstruct")
        assert "your upload" in info and pixels(x).shape == pixels(y).shape


def test_bad_uploads_are_refused_and_the_server_keeps_serving(client, tmp_path):
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    expect_error(client, "vae", "upload", 0, handle_file(str(text)), None, 0.0, "none", api="/reconstruct")
    big = Image.new("L", (8000, 8000))
    path = _png(tmp_path, "big.png", big, optimize=False)
    expect_error(client, "vae", "upload", 0, handle_file(path), None, 0.0, "none", api="/reconstruct",
                 match="too large")
    expect_error(client, "vae", "upload", 0, None, None, 0.0, "none", api="/reconstruct", match="upload an image")
    # A valid 4-megapixel PNG of noise, 11 MB: over launch(max_file_size=10 MB), refused at upload.
    noise = np.random.default_rng(0).integers(0, 256, (1920, 1920, 3), dtype=np.uint8)
    heavy = _png(tmp_path, "heavy.png", Image.fromarray(noise), compress_level=1)
    assert os.path.getsize(heavy) > 10 * 1024 * 1024
    expect_error(client, "vae", "upload", 0, handle_file(heavy), None, 0.0, "none", api="/reconstruct",
                 match="maximum file size")
    ok = call(client, "vae", "dataset point", 1, None, None, 0.0, "none", api="/reconstruct")
    assert pixels(ok[1]).ndim == 3


def test_drawing_is_reconstructed(client, tmp_path):
    canvas = np.zeros((256, 256, 3), np.uint8)
    canvas[80:180, 80:180] = 255
    path = _png(tmp_path, "drawing.png", Image.fromarray(canvas))
    sketch = {"background": handle_file(path), "layers": [], "composite": handle_file(path)}
    x, y, _, info, *_ = call(client, "vae", "drawing", 0, None, sketch, 0.0, "none", api="/reconstruct")
    assert "your drawing" in info
    shown = pixels(x)
    assert shown[shown.shape[0] // 2, shown.shape[1] // 2].max() > 200 and shown[2, 2].max() < 30


def test_your_image_is_point_minus_one_in_this_session_only(app, tmp_path):
    mine = fresh_client(app)
    expect_error(mine, "vae", -1, 3, "slerp", 5, api="/interpolate", match="your own image")
    im = Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    x, y, *_ = call(mine, "vae", "upload", 0, handle_file(_png(tmp_path, "mine.png", im)), None, 0.0, "none",
                    api="/reconstruct")
    strip = pixels(call(mine, "vae", -1, 3, "linear", 5, api="/interpolate"))
    assert strip.shape[1] > strip.shape[0] * 3
    first = pixels(call(mine, "vae", -1, 3, "linear", 0.0, api="/interpolate_frame"))
    assert close(first, pixels(y))  # t = 0 decodes A = your image's posterior mean
    other = fresh_client(app)
    expect_error(other, "vae", -1, 3, "linear", 0.0, api="/interpolate_frame", match="your own image")


# ---- samples ----------------------------------------------------------------------------------------------
def test_samples_follow_seed_and_temperature(client):
    a = pixels(call(client, "vae", 16, 1, 1.0, api="/sample"))
    again = pixels(call(client, "vae", 16, 1, 1.0, api="/sample"))
    other_seed = pixels(call(client, "vae", 16, 2, 1.0, api="/sample"))
    cold = pixels(call(client, "vae", 16, 1, 0.2, api="/sample"))
    assert np.array_equal(a, again)
    assert not np.array_equal(a, other_seed) and not np.array_equal(a, cold)
    assert a.shape[0] == a.shape[1]  # 4×4 grid
    expect_error(client, "vae", 16, 1, 50.0, api="/sample", match=("temperature", "maximum"))
    expect_error(client, "vae", 1000, 1, 1.0, api="/sample", match="choices")


def test_vq_samples_need_a_prior(client):
    expect_error(client, "vq", 9, 0, 1.0, api="/sample", match="no prior")
    grid = pixels(call(client, "vq-prior", 9, 0, 1.0, api="/sample"))
    assert grid.shape[0] == grid.shape[1] and grid.std() > 0


# ---- interpolation ----------------------------------------------------------------------------------------
def test_interpolation_strip_and_live_frame(client):
    strip5 = pixels(call(client, "vae", 2, 9, "slerp", 5, api="/interpolate"))
    strip9 = pixels(call(client, "vae", 2, 9, "slerp", 9, api="/interpolate"))
    assert strip5.shape[:2] == (96 + 6, 5 * 99 + 3)  # one row of 96-px tiles
    assert strip9.shape[:2] == (2 * 99 + 3, 7 * 99 + 3)  # wrapped to the tab's width: 7 + 2 frames
    recon_a = pixels(call(client, "vae", 2, api="/point")[1])
    recon_b = pixels(call(client, "vae", 9, api="/point")[1])
    f0 = pixels(call(client, "vae", 2, 9, "slerp", 0.0, api="/interpolate_frame"))
    f1 = pixels(call(client, "vae", 2, 9, "slerp", 1.0, api="/interpolate_frame"))
    mid_lin = pixels(call(client, "vae", 2, 9, "linear", 0.5, api="/interpolate_frame"))
    mid_sph = pixels(call(client, "vae", 2, 9, "slerp", 0.5, api="/interpolate_frame"))
    assert close(f0, recon_a) and close(f1, recon_b)
    assert not np.array_equal(mid_lin, f0) and not np.array_equal(mid_lin, f1)
    assert not np.array_equal(mid_lin, mid_sph)
    expect_error(client, "vae", 2, 9, "cubic", 0.5, api="/interpolate_frame", match=("method", "choices"))
    expect_error(client, "vae", 2, 9, "slerp", 1.5, api="/interpolate_frame", match=("t must be", "maximum"))
    expect_error(client, "vae", 2, 9, "slerp", 500, api="/interpolate", match=("steps", "maximum"))


# ---- attributes -------------------------------------------------------------------------------------------
def test_attribute_vector_edits_the_input(client):
    original, edited, strip, info = call(client, "vae", "smile", False, 3, 2.0, api="/attribute")
    assert "ROC-AUC" in info
    recon = pixels(call(client, "vae", 3, api="/point")[1])
    zero = pixels(call(client, "vae", "smile", False, 3, 0.0, api="/attribute_edit"))
    plus = pixels(call(client, "vae", "smile", False, 3, 3.0, api="/attribute_edit"))
    minus = pixels(call(client, "vae", "smile", False, 3, -3.0, api="/attribute_edit"))
    assert close(zero, recon)  # strength 0 is the reconstruction of the input
    assert not np.array_equal(plus, zero) and not np.array_equal(plus, minus)
    assert np.array_equal(pixels(edited), pixels(call(client, "vae", "smile", False, 3, 2.0, api="/attribute_edit")))
    s = pixels(strip)
    assert s.shape[:2] == (96 + 6, 5 * 99 + 3)  # strengths -3 … 3 in five 96-px tiles
    _, corrected, _, corrected_info = call(client, "vae", "smile", True, 3, 2.0, api="/attribute")
    assert "bias-corrected" in corrected_info and "glasses" in corrected_info
    assert not np.array_equal(pixels(corrected), pixels(edited))
    expect_error(client, "vae", "beard", False, 3, 1.0, api="/attribute_edit", match="unknown attribute")
    expect_error(client, "vae", "smile", False, 3, 50.0, api="/attribute_edit", match=("strength", "maximum"))


def test_analogy(client):
    row = pixels(call(client, "vae", 4, 4, 7, api="/analogy"))
    assert row.shape[1] / row.shape[0] == pytest.approx(4, rel=0.15)
    a, b, c, result = tiles(row, 4)
    assert close(a, b) and close(result, c)  # A − A + C = C
    assert not np.array_equal(a, c)
    other = pixels(call(client, "vae", 4, 5, 7, api="/analogy"))
    assert not np.array_equal(other, row)


# ---- disentanglement ----------------------------------------------------------------------------------------
def test_traversal_kl_scores_and_live_sliders(client):
    grid, note, kl, scores, *sliders = call(client, "vae", 1, 3.0, api="/disentanglement")
    g = pixels(grid)
    band = 16 + 8  # a label band above each row and the column values under the last (figures.labelled_grid)
    rows = (g.shape[0] - 3 - band) / (band + 99)
    assert rows == int(rows) and 1 <= rows <= 6 and g.shape[1] == 5 * 99 + 3  # five 96-px columns
    assert "KL" in note and "MIG" in note
    assert pixels(kl).shape[0] > 50 and "active units" in scores
    narrow = pixels(call(client, "vae", 1, 1.0, api="/disentanglement")[0])
    assert not np.array_equal(narrow, g)
    base = pixels(call(client, "vae", 1, 0, 0, 0, 0, 0, 0, api="/live_traversal"))
    moved = pixels(call(client, "vae", 1, 3, 0, 0, 0, 0, 0, api="/live_traversal"))
    assert not np.array_equal(base, moved)
    expect_error(client, "vae", 1, 99, 0, 0, 0, 0, 0, api="/live_traversal", match=("value of z", "maximum"))
    vq = call(client, "vq", 1, 3.0, api="/disentanglement")
    assert vq[0] is None and "discrete codes" in vq[1]


def test_two_runs_side_by_side(client):
    grid, note, kl, scores = call(client, "vae", "vae", 2, 3.0, api="/compare")
    own = call(client, "vae", 2, 3.0, api="/disentanglement")
    assert np.array_equal(pixels(grid), pixels(own[0]))
    assert pixels(kl).shape[0] > 50 and "active units" in scores
    vq = call(client, "vq", "vae", 2, 3.0, api="/compare")
    assert value(vq[0]) is None and "discrete codes" in vq[1]
    none = call(client, "none", "vae", 2, 3.0, api="/compare")
    assert value(none[0]) is None and "choose a second run" in none[1].lower()


# ---- downloads --------------------------------------------------------------------------------------------
def test_downloads(client):
    png = call(client, "vae", 9, 3, 1.0, api="/download_samples")
    assert png.endswith(".png") and Image.open(png).size[0] > 0
    assert np.array_equal(pixels(png), pixels(call(client, "vae", 9, 3, 1.0, api="/sample")))
    gif = call(client, "vae", 0, 1, "linear", 5, api="/download_gif")
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 8  # 5 forward + 3 back (ping-pong)
    trav = call(client, "vae", 0, 2.0, api="/download_traversal")
    assert Image.open(trav).format == "PNG"
    csv_path = call(client, "vae", api="/download_latents")
    with open(csv_path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    assert lines[0].startswith("point,index,split,x,y") and "mu_5" in lines[0] and len(lines) == 301
    attrs = call(client, "vae", api="/download_attributes")
    with open(attrs, encoding="utf-8") as f:
        data = json.load(f)
    assert "smile" in data["attributes"] and len(data["attributes"]["smile"]["vector"]) == 6


# ---- bad input ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("run", ["../vae", "/etc", "vae/../../", "", "x" * 500])
def test_run_names_outside_the_run_folders_are_refused(client, run):
    # The run picker only takes the names it lists; the back end refuses any other name as well.
    expect_error(client, run, 0, api="/point", match=("unknown run", "not in the list of choices"))


def test_bad_numbers_are_clear_errors_and_the_server_keeps_serving(client):
    expect_error(client, "vae", 300, api="/point", match=("between", "maximum"))
    expect_error(client, "vae", -2, api="/point")
    expect_error(client, "vae", "abc", api="/point")
    expect_error(client, "vae", 2, 9, "slerp", float("inf"), api="/interpolate_frame")
    expect_error(client, "vae", 2, 9, "slerp", "half", api="/interpolate_frame")
    expect_error(client, "vae", 16, -5, 1.0, api="/sample")
    image, recon, info, gallery = call(client, "vae", 0, api="/point")
    assert "point 0" in info


def test_only_our_static_files_are_served(app, runs_root):
    from explorer.ui_map import plotly_js_path

    base = app[1]
    with urllib.request.urlopen(base + "gradio_api/file=" + plotly_js_path(), timeout=10) as r:
        assert r.status == 200 and len(r.read()) > 1_000_000
    for path in (os.path.join(runs_root, "vae", "config.json"), "/etc/passwd",
                 os.path.join(os.path.dirname(plotly_js_path()), "..", "__init__.py")):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(base + "gradio_api/file=" + path, timeout=10)
        assert info.value.code in (403, 404)


def test_app_without_runs_starts_and_says_how_to_train_one(tmp_path):
    from explorer.ui import build_app

    demo = build_app([str(tmp_path)])
    texts = [getattr(b, "value", "") for b in demo.blocks.values()]
    assert any(isinstance(t, str) and "No runs found" in t and "python -m training train" in t for t in texts)
    port = free_port()
    demo.launch(prevent_thread_lock=True, server_port=port, quiet=True)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.status == 200
    finally:
        demo.close()
