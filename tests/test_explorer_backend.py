"""Explorer back end: run registry, latent operations, figures.

Pure functions are tested on synthetic latent tables; the run-level tests train and export one tiny real
run (a few steps of a small VAE on a procedural dataset) once per session.
"""
from __future__ import annotations

import csv
import io
import json
import os
import struct
import threading
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from explorer import charts, figures, latent_ops as ops, pictures
from explorer.checks import choice, number, whole_number
from explorer.points import Points, require_latents
from explorer.tabs.attributes import checked_attribute
from explorer.tabs.interpolate import METHODS
from explorer.tabs.samples import sample_grid
from explorer.runs import LoadedRun, RunRegistry
from training.config import RunConfig
from training.runfolder import read_config, write_config
from training.errors import UserError


# ---- helpers ----------------------------------------------------------------------------------------------
def table_run(n=200, d=6, seed=0, labels=True) -> LoadedRun:
    """A latent table without a model: enough for the map, neighbours, payloads and downloads."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(n, d)).astype(np.float32)
    xy = (mu[:, :2] * 3 + rng.normal(scale=0.1, size=(n, 2))).astype(np.float32)
    latents = {"mu": mu, "xy": xy, "logvar": np.zeros_like(mu), "index": np.arange(n, dtype=np.int64) * 7,
               "split": (np.arange(n) % 2).astype(np.int8),
               "kl_per_dim": np.linspace(0.1, 2.0, d).astype(np.float32)}
    names, kinds = [], []
    if labels:
        latents["labels"] = np.stack([rng.integers(0, 3, n), rng.integers(0, 2, n), rng.uniform(0, 1, n)],
                                     axis=1).astype(np.float32)
        names, kinds = ["shape", "smile", "scale"], ["categorical", "binary", "continuous"]
        latents["label_names"] = np.array(names)
        latents["label_kinds"] = np.array(kinds)
    return LoadedRun(name="table", path="/nonexistent", config=RunConfig(), model=None, latents=latents,
                     attributes=None, metrics=None, has_prior=True, latent_dim=d, label_names=names,
                     label_kinds=kinds, latent_shape=(d,))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height (greyscale) followed by a tiny, wrong IDAT: a decompression bomb
    stand-in that costs nothing to build. A correct loader must refuse it from the header alone."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


# ---- interpolation -----------------------------------------------------------------------------------------
def test_slerp_keeps_norm_between_vectors_of_equal_norm():
    rng = np.random.default_rng(1)
    r = 3.7
    a, b = rng.normal(size=32), rng.normal(size=32)
    a, b = a / np.linalg.norm(a) * r, b / np.linalg.norm(b) * r
    path = ops.slerp(a, b, np.linspace(0, 1, 11))
    assert path.shape == (11, 32)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), r, rtol=1e-5)
    np.testing.assert_allclose(path[0], a, atol=1e-5)
    np.testing.assert_allclose(path[-1], b, atol=1e-5)
    # lerp between the same points dips inside the sphere
    assert np.linalg.norm(ops.lerp(a, b, 0.5)) < r * 0.99


def test_lerp_of_orthogonal_prior_samples_shrinks_towards_the_origin():
    rng = np.random.default_rng(2)
    d = 512  # high-dimensional Gaussian samples are nearly orthogonal, with norm ~ sqrt(d)
    a, b = rng.normal(size=d), rng.normal(size=d)
    mid = ops.lerp(a, b, 0.5)
    ratio = np.linalg.norm(mid) / np.mean([np.linalg.norm(a), np.linalg.norm(b)])
    assert 0.6 < ratio < 0.8  # ~ 1/sqrt(2)
    mid_s = ops.slerp(a, b, 0.5)
    assert abs(np.linalg.norm(mid_s) / np.mean([np.linalg.norm(a), np.linalg.norm(b)]) - 1) < 0.05


def test_slerp_falls_back_to_lerp_for_parallel_antiparallel_and_zero_vectors():
    z = np.array([1.0, 2.0, 3.0])
    for other in (2 * z, z.copy(), -z, np.zeros(3)):
        got = ops.slerp(z, other, np.linspace(0, 1, 5))
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, ops.lerp(z, other, np.linspace(0, 1, 5)), atol=1e-6)
    assert ops.slerp(z, 2 * z, 0.5).shape == (3,)


def test_interpolate_shapes_endpoints_and_validation():
    a, b = np.zeros(4), np.ones(4)
    path = ops.interpolate(a, b, 7, "linear")
    assert path.shape == (7, 4) and path.dtype == np.float32
    np.testing.assert_allclose(path[3], 0.5)
    assert ops.interpolate(a + 1, -b, 5, "slerp").shape == (5, 4)
    # The method and the number of steps are endpoint values: the boundary refuses them.
    with pytest.raises(UserError, match="method"):
        choice("cubic", "method", METHODS)
    with pytest.raises(UserError, match="steps"):
        whole_number(1, "steps", 2, 64)
    with pytest.raises(UserError, match="steps"):
        whole_number(10_000, "steps", 2, 64)
    with pytest.raises(UserError, match="NaN"):
        ops.lerp([0, np.nan], [1, 1], 0.5)
    with pytest.raises(UserError, match="same shape"):
        ops.slerp(np.ones(3), np.ones(4), 0.5)
    with pytest.raises(UserError, match="out of range"):
        ops.lerp([0, 1e9], [1, 1], 0.5)


def test_arithmetic_validates_shapes_and_values():
    z, v = np.ones(5), np.arange(5.0)
    np.testing.assert_allclose(ops.apply_attribute(z, v, 2.0), 1 + 2 * np.arange(5.0))
    np.testing.assert_allclose(ops.analogy([3, 3], [1, 0], [0, 1]), [2, 4])
    with pytest.raises(UserError):
        ops.apply_attribute(z, np.ones(4), 1.0)
    with pytest.raises(UserError):
        ops.apply_attribute(z, v, float("inf"))
    with pytest.raises(UserError):
        ops.analogy([1, 2], [1, 2, 3], [1, 2])


# ---- the map ------------------------------------------------------------------------------------------------
def test_knn_placement_of_a_table_point_returns_its_own_xy():
    run = table_run()
    idx = [0, 17, 199]
    placed = ops.place_on_map(run, run.latents["mu"][idx])
    np.testing.assert_allclose(placed, run.latents["xy"][idx], atol=1e-5)
    # A point between table points lands inside the range of its neighbours' coordinates.
    z = 0.5 * (run.latents["mu"][3] + run.latents["mu"][4])
    nn = ops.nearest_neighbours(run, z, 8)
    p = ops.place_on_map(run, z)[0]
    xy = run.latents["xy"][nn]
    assert np.all(p >= xy.min(axis=0) - 1e-6) and np.all(p <= xy.max(axis=0) + 1e-6)


def test_nearest_neighbours_match_brute_force():
    run = table_run(n=500, d=8, seed=3)
    rng = np.random.default_rng(4)
    q = rng.normal(size=(5, 8))
    got = ops.nearest_neighbours(run, q, 10)
    d = np.linalg.norm(run.latents["mu"][None].astype(np.float64) - q[:, None], axis=2)
    np.testing.assert_array_equal(got, np.argsort(d, axis=1, kind="stable")[:, :10])
    assert ops.nearest_neighbours(run, run.latents["mu"][42], 1).tolist() == [42]
    with pytest.raises(UserError):
        ops.nearest_neighbours(run, q, 0)
    with pytest.raises(UserError, match="shape"):
        ops.nearest_neighbours(run, np.ones(7), 3)


def test_place_on_map_takes_milliseconds_for_10000_points():
    run = table_run(n=10_000, d=10, seed=5, labels=False)
    z = np.random.default_rng(6).normal(size=(64, 10))
    def best_of_3(batch):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            out = ops.place_on_map(run, batch)
            times.append(time.perf_counter() - t0)
        return out, min(times)

    out, one = best_of_3(z[0])
    assert out.shape == (1, 2) and one < 0.02, f"placing 1 point took {one * 1000:.1f} ms"
    out, many = best_of_3(z)  # an interpolation path
    assert out.shape == (64, 2) and np.all(np.isfinite(out))
    assert many < 0.5, f"placing 64 points took {many * 1000:.0f} ms"


def test_selection_mean_and_index_validation():
    run = table_run()
    np.testing.assert_allclose(ops.mean_latent_of_selection(run, [1, 2, 3]), run.latents["mu"][[1, 2, 3]].mean(0),
                               rtol=1e-6)
    points = Points(registry=None)
    assert points.selected_rows(run, "") == []  # nothing selected: the endpoint says so, nothing decoded
    for bad in ("-1", "200", "a", "1.5"):
        with pytest.raises(UserError):
            points.selected_rows(run, bad)


def test_dims_by_kl_orders_by_kl():
    run = table_run(d=6)
    assert ops.dims_by_kl(run).tolist() == [5, 4, 3, 2, 1, 0]


def test_attribute_vectors_from_attributes_json():
    from training.attributes import attribute_vectors

    run = table_run(n=400, d=6, seed=8)
    lat = run.latents
    # make "smile" readable from dimension 2
    lat["mu"][:, 2] += 2.0 * lat["labels"][:, 1]
    run.attributes = attribute_vectors(lat["mu"], lat["labels"], run.label_names, run.label_kinds)
    v, auc = ops.attribute_vector(run, "smile", corrected=False)
    assert v.shape == (6,) and int(np.argmax(np.abs(v))) == 2 and auc > 0.8
    vc, auc_c = ops.attribute_vector(run, "smile", corrected=True)
    assert vc.shape == (6,) and np.isfinite(auc_c)
    z = lat["mu"][0]
    assert float((ops.apply_attribute(z, v, 1.0) - z) @ v) > 0
    with pytest.raises(UserError, match="unknown attribute"):
        checked_attribute(run, "nope", corrected=False)
    assert json.loads(figures.attributes_json(run))["attributes"]["smile"]["vector"] == run.attributes[
        "attributes"]["smile"]["vector"]
    with pytest.raises(UserError, match="no attribute"):  # no attributes.json and no categorical labels
        checked_attribute(table_run(labels=False), "smile", corrected=False)


# ---- figures and payloads ---------------------------------------------------------------------------------
def test_map_payload_for_10000_points_is_small_and_complete():
    run = table_run(n=10_000, d=10, seed=7)
    for color_by in ("none", "split", "shape", "smile", "scale", "z3"):
        payload = figures.map_payload(run, color_by)
        size = len(json.dumps(payload))
        assert size <= 2_000_000, f"{color_by}: {size} bytes"
        assert len(payload["x"]) == len(payload["y"]) == len(payload["index"]) == 10_000
    cat = figures.map_payload(run, "shape")
    # table_run's config names dSprites: its shape codes are named from the dataset's description
    assert cat["color_kind"] == "categorical" and [e["label"] for e in cat["legend"]] == ["square", "ellipse", "heart"]
    assert sum(e["count"] for e in cat["legend"]) == 10_000
    codes = np.array(cat["color"])
    np.testing.assert_array_equal(codes, run.latents["labels"][:, 0].astype(int))
    cont = figures.map_payload(run, "scale")
    assert cont["color_kind"] == "continuous" and len(cont["color"]) == 10_000
    assert figures.map_payload(run, "split")["legend"][1]["label"] == "test"
    np.testing.assert_allclose(cat["x"][:5], run.latents["xy"][:5, 0], atol=1e-4)
    with pytest.raises(UserError, match="colour"):
        figures.map_payload(run, "../etc")
    assert "shape" in figures.color_options(run)


def test_latents_csv_round_trip():
    run = table_run(n=50, d=4)
    rows = list(csv.reader(io.StringIO(figures.latents_csv(run).decode())))
    assert rows[0] == ["point", "index", "split", "x", "y", "shape", "smile", "scale", "mu_0", "mu_1", "mu_2", "mu_3"]
    assert len(rows) == 51
    body = np.array(rows[1:], dtype=np.float64)
    np.testing.assert_array_equal(body[:, 1], run.latents["index"])
    np.testing.assert_allclose(body[:, 8:], run.latents["mu"], rtol=1e-6)


def test_image_grid_upscale_and_png():
    imgs = np.zeros((5, 4, 6, 3), dtype=np.uint8)
    imgs[2] = 255
    grid = figures.image_grid(imgs, nrow=3, padding=2)
    assert grid.size == (3 * 6 + 4 * 2, 2 * 4 + 3 * 2) and grid.mode == "RGB"
    # the third image (white) is at row 0, column 2
    assert grid.getpixel((2 + 2 * 8, 2)) == (255, 255, 255)
    big = figures.upscale(np.zeros((28, 28, 1), dtype=np.uint8), 256)
    assert big.size == (252, 252) and big.mode == "L"
    png = figures.to_png_bytes(grid)
    assert Image.open(io.BytesIO(png)).size == grid.size
    with pytest.raises(UserError):
        figures.image_grid(np.zeros((2, 4, 4, 3), dtype=np.float32), 2)


def test_gif_has_the_requested_frames_and_loops():
    frames = np.stack([np.full((8, 8, 1), 20 * i, dtype=np.uint8) for i in range(6)])
    gif = Image.open(io.BytesIO(figures.make_gif(frames, fps=10)))
    assert gif.n_frames == 6 and gif.info.get("loop") == 0 and gif.info.get("duration") == 100
    pingpong = Image.open(io.BytesIO(figures.make_gif(frames, fps=5, pingpong=True, size=64)))
    assert pingpong.n_frames == 10 and pingpong.size == (64, 64)
    rgb = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
    assert Image.open(io.BytesIO(figures.make_gif(rgb))).n_frames == 4


def test_small_charts_draw():
    kl = charts.kl_bar_figure([0.0, 2.5, 0.3, 1.0])
    assert kl.size == (560, 260)
    px = np.asarray(kl)
    blue = np.all(px == np.array([0x4E, 0x79, 0xA7]), axis=2)
    # bar heights at the bar centres (four slots across the plot area) follow the KL values
    left, slot = charts.KL_PLOT_LEFT, (560 - charts.KL_PLOT_LEFT - charts.KL_PLOT_RIGHT) / 4
    h = [int(blue[:, int(left + (d + 0.5) * slot)].sum()) for d in range(4)]
    assert h[0] == 0 and h[1] > h[3] > h[2] > 0
    post = charts.posterior_figure(np.array([0.0, 5.0, -1.0]), np.array([0.0, -2.0, 1.0]))
    assert post.size[1] > 3 * 16
    with pytest.raises(UserError):
        charts.kl_bar_figure([np.nan])
    with pytest.raises(UserError):
        charts.posterior_figure([0.0, 1.0], [0.0])


# ---- image input --------------------------------------------------------------------------------------------
def _prep(picture, channels=1, size=16, **kw):
    x = pictures.to_model_input(picture, channels, size, **kw)
    assert x.shape == (1, channels, size, size) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    return x


def test_prepare_image_handles_odd_modes():
    rgba = Image.new("RGBA", (20, 20), (255, 255, 255, 0))
    rgba.paste((255, 255, 255, 255), (5, 5, 15, 15))
    x = _prep(rgba)  # transparent -> black background, opaque white square stays white
    assert float(x[0, 0, 0, 0]) == 0.0 and float(x[0, 0, 8, 8]) == 1.0

    deep = Image.fromarray(np.array([[0, 65535], [32768, 65535]], dtype=np.uint16))
    assert deep.mode.startswith("I;16")
    x = _prep(deep, size=2)
    np.testing.assert_allclose(x[0, 0].numpy(), [[0, 1], [128 / 255, 1]], atol=1e-6)

    pal = Image.new("P", (10, 10))
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.paste(1, (0, 0, 10, 10))
    x = _prep(pal, channels=3)
    assert float(x[0, 0].mean()) == 1.0 and float(x[0, 1].mean()) == 0.0

    cmyk = Image.new("CMYK", (12, 12), (0, 255, 255, 0))  # pure red
    x = _prep(cmyk, channels=3)
    assert float(x[0, 0].mean()) > 0.9 and float(x[0, 1].mean()) < 0.1

    _prep(Image.new("L", (1, 1), 200))  # a 1×1 upload is blown up, not refused
    _prep(Image.new("1", (9, 9), 1))
    _prep(Image.new("F", (9, 9), 0.5))
    _prep(np.zeros((9, 9, 3), dtype=np.uint8), channels=3)


def test_prepare_image_takes_the_first_frame_of_an_animation_and_crops_the_centre():
    frames = [Image.new("L", (30, 10), v) for v in (255, 0, 128)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    x = _prep(buf.getvalue(), size=10)
    assert float(x.min()) == 1.0

    wide = Image.new("L", (30, 10), 0)
    wide.paste(255, (10, 0, 20, 10))  # only the central square is white
    assert float(_prep(wide, size=10).min()) == 1.0


def test_prepare_image_refuses_huge_images_and_non_images():
    with pytest.raises(UserError, match="too large"):
        pictures.to_model_input(png_header_only(8000, 6000), 1, 16)  # 48 MP: refused from the header
    with pytest.raises(UserError, match="too large"):
        pictures.to_model_input(Image.new("L", (20, 20)), 1, 16, max_pixels=100)
    with pytest.raises(UserError, match="not an image"):
        pictures.to_model_input(b"hello, not a picture", 1, 16)
    with pytest.raises(UserError):
        pictures.to_model_input("/etc/passwd", 1, 16)
    with pytest.raises(UserError):
        pictures.to_model_input(png_header_only(20, 20), 1, 16)  # header fine, pixels corrupt
    with pytest.raises(UserError):
        pictures.to_model_input(np.zeros((4, 4, 2), dtype=np.uint8), 1, 16)


def test_corrupt_is_seeded_and_masks_what_it_says():
    x = torch.full((1, 1, 10, 10), 0.5)
    a = pictures.corrupt(x, noise_std=0.2, seed=3)
    assert torch.equal(a, pictures.corrupt(x, noise_std=0.2, seed=3)) and not torch.equal(a, pictures.corrupt(x, 0.2, seed=4))
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    boxed = pictures.corrupt(x, mask_box=(0.0, 0.0, 0.5, 1.0), fill=0.0)
    assert float(boxed[0, 0, :, :5].max()) == 0.0 and float(boxed[0, 0, :, 5:].min()) == 0.5
    holes = pictures.corrupt(torch.full((1, 3, 64, 64), 0.5), mask_fraction=0.3, seed=0)
    hidden = (holes == 0).all(dim=1).float().mean()
    assert 0.25 < float(hidden) < 0.35
    for kw in ({"mask_fraction": 2}, {"mask_box": (0.5, 0, 0.2, 1)}):
        with pytest.raises(UserError):
            pictures.corrupt(x, **kw)
    for noise in (-1, float("nan")):  # the noise level is an endpoint value: the boundary refuses it
        with pytest.raises(UserError):
            number(noise, "noise", 0.0, 1.0)


# ---- the registry -------------------------------------------------------------------------------------------
def _fake_folder(path, config: dict, weights: bytes = b"") -> str:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(path, "model.safetensors"), "wb") as f:
        f.write(weights)
    return path


def test_registry_discovers_one_and_two_levels_and_refuses_unknown_names(tmp_path):
    good = RunConfig().to_dict()
    _fake_folder(tmp_path / "a", good)
    _fake_folder(tmp_path / "sweep" / "b", good)
    _fake_folder(tmp_path / "x" / "y" / "too-deep", good)
    (tmp_path / "not-a-run").mkdir()
    reg = RunRegistry([str(tmp_path), str(tmp_path / "missing")])
    assert reg.names() == ["a", "sweep/b"]
    assert reg.missing_roots == [str(tmp_path / "missing")]
    for bad in ("../x", "/etc", "/etc/passwd", "a/../a", "unknown", "", "x/y/too-deep", None, 3):
        with pytest.raises(UserError, match="unknown run"):
            reg.get(bad)


def test_registry_lists_broken_runs_with_a_one_line_error(tmp_path):
    bad_version = RunConfig().to_dict()
    bad_version["format_version"] = 99
    _fake_folder(tmp_path / "future", bad_version)
    _fake_folder(tmp_path / "garbage", RunConfig().to_dict(), weights=b"\x00" * 4)
    (tmp_path / "notjson").mkdir()
    (tmp_path / "notjson" / "config.json").write_text("{oops")
    (tmp_path / "notjson" / "model.safetensors").write_bytes(b"")
    reg = RunRegistry([str(tmp_path)])
    assert reg.names() == ["future", "garbage", "notjson"]
    assert "version" in reg.error("future")
    assert "safetensors" in reg.error("garbage") or "truncated" in reg.error("garbage")
    for name in reg.names():
        with pytest.raises(UserError) as e:
            reg.get(name)
        assert "\n" not in str(e.value) and name in str(e.value)


def untrained_run_folder(path, latent_dim=3) -> str:
    """A run folder as `train` writes it (config + safetensors weights), for an untrained model."""
    from training.config import model_config
    from training.models import build_model
    from training.runfolder import save_weights

    mc = model_config(name="vae", image_size=16, channels=1, latent_dim=latent_dim, hidden=[4, 4], fc_dim=8)
    os.makedirs(path, exist_ok=True)
    write_config(os.path.join(path, "config.json"), RunConfig(model=mc))
    save_weights(build_model(mc), os.path.join(path, "model.safetensors"), step=3)
    return str(path)


def _snapshot(root) -> dict:
    out = {}
    for folder, _, files in os.walk(root):
        for f in files:
            st = os.stat(os.path.join(folder, f))
            out[os.path.join(folder, f)] = (st.st_size, st.st_mtime_ns)
    return out


def test_broken_runs_do_not_break_the_others_and_folders_stay_untouched(tmp_path):
    ok = untrained_run_folder(tmp_path / "ok")
    mismatch = untrained_run_folder(tmp_path / "mismatch", latent_dim=3)
    cfg = read_config(os.path.join(mismatch, "config.json"))
    cfg.model.latent_dim = 5  # the weights were saved for 3 latents
    write_config(os.path.join(mismatch, "config.json"), cfg)
    pickled = untrained_run_folder(tmp_path / "pickled")
    np.savez(os.path.join(pickled, "latents.npz"), mu=np.array([{"evil": 1}], dtype=object),
             xy=np.zeros((1, 2), np.float32))
    wrong_d = untrained_run_folder(tmp_path / "wrong-d")
    np.savez_compressed(os.path.join(wrong_d, "latents.npz"), mu=np.zeros((4, 7), np.float32),
                        xy=np.zeros((4, 2), np.float32))
    with open(os.path.join(ok, "metrics.json"), "w") as f:
        json.dump({"format_version": 1, "elbo": -12.5, "disentanglement": {"mig": 0.25}}, f)
    before = _snapshot(tmp_path)

    reg = RunRegistry([str(tmp_path)])
    assert reg.names() == ["mismatch", "ok", "pickled", "wrong-d"]
    with pytest.raises(UserError, match="mismatch") as e:
        reg.get("mismatch")
    assert "\n" not in str(e.value) and reg.error("mismatch") and str(tmp_path) not in str(e.value)
    assert "mismatch" not in reg.ok_names() and "ok" in reg.ok_names()
    run = reg.get("ok")
    assert run.latents is None and run.step == 3 and run.has_prior
    assert run.key_metrics() == {"ELBO (nats)": "-12.50", "MIG": "0.250"}
    for name in ("pickled", "wrong-d"):
        r = reg.get(name)
        assert r.latents is None and any("latents.npz" in p for p in r.problems), r.problems
    with pytest.raises(UserError, match="no exported latents"):
        require_latents(run)
    ops.decode(run, np.zeros(3))
    assert _snapshot(tmp_path) == before  # the explorer never writes into run folders


# ---- a real run ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run_root(tmp_path_factory):
    """Train a tiny VAE for a few steps on the shipped MNIST test split and export it with the project's
    trainer and export: a real run folder, as the explorer meets it."""
    from training.config import DataConfig, TrainConfig, model_config
    from training import export, latent_map
    from training.trainer import train

    shared_data = os.environ["VAE_TEST_MNIST_DIR"]  # official split or its stand-in (tests/conftest.py)
    root = tmp_path_factory.mktemp("runs")
    cfg = RunConfig(
        data=DataConfig(name="mnist", data_dir=shared_data, subset=500),
        model=model_config(name="vae", latent_dim=4, hidden=[8, 16], fc_dim=32),
        train=TrainConfig(steps=6, batch_size=16, device="cpu", log_every=3, sample_every=6,
                          checkpoint_every=6, grid_n=4, seed=1))
    out = str(root / "tiny")
    train(cfg, out, progress=False)
    # The export's UMAP fit costs a minute of numba JIT on 2 cores; the explorer does not care how the
    # map was made, so this export uses the export's own PCA fallback for the 2-D coordinates.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(export, "fit_map", lambda mu, *args, **kwargs: latent_map.pca_2d(mu))
        export.export_run(out, n=300, progress=False)
    return str(root)


def test_loaded_run_is_shared_and_loaded_once(tiny_run_root):
    reg = RunRegistry([tiny_run_root])
    assert reg.names() == ["tiny"]
    got = []
    threads = [threading.Thread(target=lambda: got.append(reg.get("tiny"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is got[0] for r in got) and reg.get("tiny") is got[0]
    run = got[0]
    assert run.latent_dim == 4 and not run.model.training
    assert run.latents is not None and run.latents["mu"].shape[1] == 4
    card = run.card()
    assert card["dataset"] == "mnist" and card["latent size"] == 4
    assert "| model | vae" in run.card_markdown()


def test_real_run_encode_decode_traverse_sample(tiny_run_root):
    run = RunRegistry([tiny_run_root]).get("tiny")
    thumbs = ops.table_images(run, [0, 1, 2])
    assert thumbs.shape == (3, 28, 28, 1) and thumbs.dtype == np.uint8
    mu, logvar = ops.encode_images(run, thumbs)
    assert mu.shape == (3, 4) and logvar.shape == (3, 4)
    imgs = ops.decode(run, mu)
    assert imgs.shape == (3, 28, 28, 1) and imgs.dtype == np.uint8
    assert ops.reconstruct(run, thumbs).shape == (3, 28, 28, 1)
    x = pictures.prepare_image(run, Image.new("RGB", (50, 40), "white"))
    assert x.shape == (1, 1, 28, 28)
    grid = ops.traversal(run, mu[0], dims=[0, 1], values=np.linspace(-2, 2, 5))
    assert grid.shape == (10, 28, 28, 1)
    # row 0 changes dimension 0 only: its images differ from row 1's in general, and match a direct decode
    z = mu[0].copy()
    z[1] = 2.0
    np.testing.assert_array_equal(grid[9], ops.decode(run, z)[0])
    samples = ops.sample_prior(run, 6, seed=1, temperature=1.0)
    assert samples.shape == (6, 28, 28, 1)
    np.testing.assert_array_equal(samples, ops.sample_prior(run, 6, seed=1))
    for bad in (np.full(4, np.nan), np.ones(5), np.full(4, 1e6)):
        with pytest.raises(UserError):
            ops.decode(run, bad)
    with pytest.raises(UserError):
        sample_grid(run, 6, 0, -1)
    assert ops.place_on_map(run, mu).shape == (3, 2)


def test_real_run_map_payload_downloads_and_attributes(tiny_run_root):
    run = RunRegistry([tiny_run_root]).get("tiny")
    assert run.label_names == ["digit"] and run.n_points == 300
    payload = figures.map_payload(run, "digit")
    assert payload["color_kind"] == "categorical" and len(payload["x"]) == 300
    assert [e["label"] for e in payload["legend"]] == [str(d) for d in range(10)]
    rows = list(csv.reader(io.StringIO(figures.latents_csv(run).decode())))
    assert rows[0][:6] == ["point", "index", "split", "x", "y", "digit"] and len(rows) == 301
    v, auc = ops.attribute_vector(run, "digit", corrected=False)
    assert v.shape == (4,) and (np.isnan(auc) or 0.0 <= auc <= 1.0)
    kl = ops.kl_per_dim(run)
    assert kl.shape == (4,) and ops.dims_by_kl(run)[0] == int(np.argmax(kl))
    assert charts.kl_bar_figure(kl).size == (560, 260)
    mu, logvar = ops.encode_images(run, ops.table_images(run, [5]))
    assert charts.posterior_figure(mu[0], logvar[0]).size[0] == 420
    # a table point's own thumbnail, encoded again, lands next to it on the map
    np.testing.assert_allclose(mu[0], run.latents["mu"][5], atol=1e-4)
    np.testing.assert_allclose(ops.place_on_map(run, mu)[0], run.latents["xy"][5], atol=1e-3)


@pytest.fixture(scope="module")
def vq_run_root(tmp_path_factory):
    """A tiny VQ-VAE run twice: without a prior, and with a tiny PixelCNN prior."""
    import shutil

    from training.config import DataConfig, TrainConfig, model_config
    from training.prior import train_prior
    from training.trainer import train

    shared_data = os.environ["VAE_TEST_MNIST_DIR"]  # official split or its stand-in (tests/conftest.py)
    root = tmp_path_factory.mktemp("vq")
    cfg = RunConfig(
        data=DataConfig(name="mnist", data_dir=shared_data, subset=300),
        model=model_config(name="vqvae", hidden=[8, 16], num_codes=16, code_dim=4),
        train=TrainConfig(steps=4, batch_size=16, device="cpu", log_every=2, sample_every=4,
                          checkpoint_every=4, grid_n=4, seed=2))
    train(cfg, str(root / "vq"), progress=False)
    shutil.copytree(root / "vq", root / "vq-prior")
    train_prior(str(root / "vq-prior"), steps=3, batch_size=16, layers=2, channels=8, n_train=64, n_test=16,
                device="cpu", progress=False)
    return str(root)


def test_vq_run_quantises_on_decode_and_samples_only_with_a_prior(vq_run_root):
    reg = RunRegistry([vq_run_root])
    assert reg.names() == ["vq", "vq-prior"]
    plain, with_prior = reg.get("vq"), reg.get("vq-prior")
    assert plain.latent_dim == 4 * 7 * 7 and not plain.has_prior and with_prior.has_prior
    assert "no" in plain.card()["samples"]
    with pytest.raises(UserError, match="no prior"):
        sample_grid(plain, 2, 0, 1.0)
    x = pictures.prepare_image(plain, Image.new("L", (28, 28), 255))
    mu, logvar = ops.encode_images(plain, x)
    assert mu.shape == (1, 196) and not logvar.any()
    np.testing.assert_array_equal(ops.decode(plain, mu), ops.reconstruct(plain, x))
    # quantisation snaps a slightly moved latent back onto the same codes
    np.testing.assert_array_equal(ops.decode(plain, mu + 1e-4), ops.decode(plain, mu))
    samples = ops.sample_prior(with_prior, 2, seed=5)
    assert samples.shape == (2, 28, 28, 1)
    np.testing.assert_array_equal(samples, ops.sample_prior(with_prior, 2, seed=5))


def test_an_autoencoder_run_still_decodes_normal_draws_and_says_it_has_no_prior(tmp_path):
    """An AE has no prior, but the Samples tab decodes z ~ N(0, I) anyway: their poor quality is the lesson."""
    from helpers_app import tiny_run_config
    from explorer.tabs.samples import sample_note
    from training.trainer import train

    # Trained only: the Samples tab needs the weights, not an export (whose UMAP would cost minutes here).
    train(tiny_run_config("ae", steps=10), str(tmp_path / "ae"), progress=False)
    run = RunRegistry([str(tmp_path)]).get("ae")
    assert run.model is not None and run.config.model.name == "ae"
    assert "no prior to sample from" in sample_note(run) and "N(0, T²·I)" in sample_note(run)
    grid, seed = sample_grid(run, 4, 3, 1.0)
    assert seed == 3 and np.asarray(grid).std() > 0
    # Not the VQ-VAE's message: nothing to train, the draws are shown.
    assert "train-prior" not in sample_note(run)
