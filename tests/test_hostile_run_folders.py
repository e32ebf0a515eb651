"""A stranger's run folder or CLI sizes: one line of error, never a crash or a pinned memory.

Run folders: each bad folder sits next to a good one; the registry (and the app built over it) keeps
serving the good one and lists the bad one as broken with a one-line reason. CLI: each bad size or value
ends in one `error:` line, exit code 2, and no run folder written. The sizes are checked from the config
before anything is allocated, so these cases run in milliseconds.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from PIL import Image

from explorer.runs import RunRegistry
from explorer.ui import build_app
from helpers_hostile import malicious_plain_pickle, malicious_torch_checkpoint
from training import cli
from training.config import MAX_JSON_DEPTH, RunConfig, model_config
from training.errors import UserError
from training.models import build_model
from training.runfolder import (MAX_LATENT_POINTS, load_checkpoint, load_latents, npz_shapes, save_weights,
                                write_config)
from training.trainer import check_sizes

DEEP = 100_000


def good_run(path) -> str:
    """A run folder as `train` writes it (config + safetensors weights), for a small untrained model."""
    mc = model_config(name="vae", image_size=16, channels=1, latent_dim=3, hidden=[4, 4], fc_dim=8)
    os.makedirs(path, exist_ok=True)
    write_config(os.path.join(path, "config.json"), RunConfig(model=mc))
    save_weights(build_model(mc), os.path.join(path, "model.safetensors"), step=3)
    return str(path)


def write_safetensors_header(path: str, header: bytes) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + b"\0" * 64)


def edit_config(folder: str, edit) -> None:
    path = os.path.join(folder, "config.json")
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    edit(doc)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f)


def tensor_header(offsets: str) -> bytes:
    return ('{"w": {"dtype": "F32", "shape": [4], "data_offsets": %s}}' % offsets).encode()


# name -> what makes the copy of the good folder bad
BAD_FOLDERS = {
    "deep-config": lambda p: open(os.path.join(p, "config.json"), "w").write("[" * DEEP + "]" * DEEP),
    "deep-config-field": lambda p: edit_config(p, lambda d: d["data"].update(
        options={"a": json.loads("[" * 500 + "]" * 500)})),
    "deep-header": lambda p: write_safetensors_header(os.path.join(p, "model.safetensors"),
                                                      b'{"a":' + b"[" * DEEP + b"]" * DEEP + b"}"),
    "offsets-strings": lambda p: write_safetensors_header(os.path.join(p, "model.safetensors"),
                                                          tensor_header('["a", "b"]')),
    "offsets-one": lambda p: write_safetensors_header(os.path.join(p, "model.safetensors"), tensor_header("[0]")),
    "offsets-huge": lambda p: write_safetensors_header(os.path.join(p, "model.safetensors"),
                                                       tensor_header("[0, 1e400]")),
    "name-list": lambda p: edit_config(p, lambda d: d["model"].update(name=["vae"])),
    "hidden-huge": lambda p: edit_config(p, lambda d: d["model"].update(hidden=[65536] * 4)),
    "latent-huge": lambda p: edit_config(p, lambda d: d["model"].update(latent_dim=10_000_000)),
}


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile-folders")
    good = good_run(root / "good")
    for name, make_bad in BAD_FOLDERS.items():
        shutil.copytree(good, root / name)
        make_bad(str(root / name))
    return str(root)


def assert_one_line(text: str) -> None:
    assert text and "\n" not in text and "Traceback" not in text and len(text) <= 300, text


@pytest.mark.parametrize("name", list(BAD_FOLDERS))
def test_a_bad_folder_is_listed_broken_next_to_a_good_one(runs_root, name):
    reg = RunRegistry([runs_root])
    assert "good" in reg.ok_names() and name in reg.names() and name not in reg.ok_names()
    assert_one_line(reg.error(name))
    assert runs_root not in reg.error(name)
    with pytest.raises(UserError) as e:
        reg.get(name)
    assert_one_line(str(e.value))
    assert reg.get("good").step == 3


def test_reasons_name_the_file_and_the_problem(runs_root):
    reg = RunRegistry([runs_root])
    expected = {"deep-config": ("config.json", "json"), "deep-config-field": ("config.json", "nested"),
                "deep-header": ("model.safetensors", "recursion"), "offsets-strings": ("model.safetensors", ""),
                "offsets-one": ("model.safetensors", ""), "offsets-huge": ("model.safetensors", ""),
                "name-list": ("config.json", "unknown model"), "hidden-huge": ("config.json", "parameters"),
                "latent-huge": ("model.safetensors", "do not match", "parameters")}
    for name, words in expected.items():
        assert all(w in reg.error(name).lower() for w in words), (name, reg.error(name))


def test_rescan_and_build_app_survive_bad_folders_added_later(tmp_path):
    good_run(tmp_path / "good")
    reg = RunRegistry([str(tmp_path)])
    assert reg.ok_names() == ["good"]
    for name, make_bad in BAD_FOLDERS.items():
        shutil.copytree(tmp_path / "good", tmp_path / name)
        make_bad(str(tmp_path / name))
    assert sorted(reg.rescan()) == sorted(["good", *BAD_FOLDERS])
    assert reg.ok_names() == ["good"]
    demo = build_app(registry=reg)
    note = demo.points.broken_runs_note()
    assert all(f"`{name}`" in note for name in BAD_FOLDERS)
    assert all(len(line) < 400 for line in note.splitlines())


def test_a_check_that_fails_unexpectedly_marks_only_that_folder(tmp_path, monkeypatch):
    good_run(tmp_path / "good")
    good_run(tmp_path / "odd")
    real = RunRegistry.__init__.__globals__["check_run_folder"]

    def check(path):
        if path.endswith("odd"):
            raise RuntimeError("surprise\nsecond line")
        return real(path)

    monkeypatch.setitem(RunRegistry.__init__.__globals__, "check_run_folder", check)
    reg = RunRegistry([str(tmp_path)])
    assert reg.ok_names() == ["good"]
    assert_one_line(reg.error("odd"))


# ---- latents.npz -------------------------------------------------------------------------------------------
def npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return b"\x93NUMPY\x01\x00" + buffer.getvalue()[8:]


def test_a_zip_bomb_latent_table_is_refused_from_its_headers(tmp_path):
    run = good_run(tmp_path / "bomb")
    with zipfile.ZipFile(os.path.join(run, "latents.npz"), "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("mu.npy", npy_header((50_000_000, 3)) + b"\0" * 4096)
        z.writestr("xy.npy", npy_header((50_000_000, 2)))
    assert os.path.getsize(os.path.join(run, "latents.npz")) < 2000
    assert npz_shapes(os.path.join(run, "latents.npz"))["mu"][0] == (50_000_000, 3)
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match="at most 100,000"):
            load_latents(run, 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2 ** 20, peak
    reg = RunRegistry([str(tmp_path)])
    loaded = reg.get("bomb")
    assert loaded.latents is None and any("100,000" in p for p in loaded.problems), loaded.problems


def test_a_table_over_the_point_cap_loads_without_it(tmp_path):
    run = good_run(tmp_path / "many")
    n = MAX_LATENT_POINTS + 1
    np.savez_compressed(os.path.join(run, "latents.npz"), mu=np.zeros((n, 3), np.float32),
                        xy=np.zeros((n, 2), np.float32))
    loaded = RunRegistry([str(tmp_path)]).get("many")
    assert loaded.latents is None
    assert any(f"{n:,} points" in p for p in loaded.problems), loaded.problems


def test_a_table_declaring_huge_thumbnails_is_refused(tmp_path):
    run = good_run(tmp_path / "thumbs")
    with zipfile.ZipFile(os.path.join(run, "latents.npz"), "w") as z:
        z.writestr("mu.npy", npy_header((10, 3)) + b"\0" * 120)
        z.writestr("xy.npy", npy_header((10, 2)) + b"\0" * 80)
        z.writestr("thumbs.npy", npy_header((10, 3, 30000, 30000), "|u1"))
    with pytest.raises(UserError, match="GiB"):
        load_latents(run, 3)


# ---- the CLI -------------------------------------------------------------------------------------------------
def run_cli(argv: list) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(argv)
    return code, err.getvalue()


def assert_refused(argv: list, *words: str) -> str:
    code, err = run_cli(argv)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    assert_one_line(lines[0])
    assert all(w.lower() in lines[0].lower() for w in words), lines[0]
    return lines[0]


def small_train(out: str, *extra: str) -> list:
    return ["train", "--model", "vae", "--dataset", "smileys", "--steps", "1", "--device", "cpu", "--quiet",
            "--out", out, *extra]


CLI_CASES = {
    "latent-dim": (["--latent-dim", "10000000"], ("parameters", "latent_dim")),
    "batch-size": (["--batch-size", "1000000000"], ("batch", "GiB")),
    "hidden": (["--hidden", "65536", "65536", "65536", "65536"], ("parameters", "hidden")),
    "hidden-layers": (["--hidden", *["8"] * 40], ("layers",)),
    "image-size": (["--image-size", "100000"], ("image_size",)),
    "negative-steps": (["--steps", "-5"], ("steps",)),
    "deep-set": (["--set", "data.options=" + "[" * DEEP + "]" * DEEP], ("nested", "--set data.options")),
    "deep-set-500": (["--set", "data.options=" + "[" * 500 + "]" * 500], ("nested",)),
    "name-list": (["--set", 'model.name=["vae"]'], ("unknown model",)),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_sizes_and_values_are_one_line_errors(tmp_path, case):
    extra, words = CLI_CASES[case]
    out = str(tmp_path / "run")
    assert_refused(small_train(out, *extra), *words)
    assert not os.path.exists(out)


def test_huge_steps_pass_the_size_checks(tmp_path):
    # Steps are time, not memory: no size check refuses a huge count.
    cfg = RunConfig()
    cfg.train.steps = 10 ** 12
    check_sizes(cfg)


def test_deep_config_files_are_one_line_errors(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * DEEP + "]" * DEEP)
    assert_refused(["train", "--config", str(deep), "--out", str(tmp_path / "a")], "json")
    doc = RunConfig().to_dict()
    doc["data"]["options"] = {"a": json.loads("[" * 500 + "]" * 500)}
    nested = tmp_path / "nested.json"
    nested.write_text(json.dumps(doc))
    assert_refused(["train", "--config", str(nested), "--out", str(tmp_path / "b")], "nested", str(MAX_JSON_DEPTH))
    assert not os.path.exists(tmp_path / "a") and not os.path.exists(tmp_path / "b")


def test_sweep_out_on_an_existing_file(tmp_path):
    config = tmp_path / "base.json"
    config.write_text(json.dumps(RunConfig().to_dict()))
    existing = tmp_path / "a-file"
    existing.write_text("keep me")
    assert_refused(["sweep", "--config", str(config), "--grid", "seed=0,1", "--out", str(existing)], "not a folder")
    assert existing.read_text() == "keep me"


def test_export_n_over_the_cap(tmp_path):
    run = good_run(tmp_path / "run")
    assert_refused(["export", run, "--n", str(MAX_LATENT_POINTS + 1)], "--n", "100,000")
    assert_refused(["export", run, "--n", "0"], "--n")
    assert not os.path.exists(os.path.join(run, "latents.npz"))


def test_resume_of_a_missing_folder_says_so(tmp_path):
    missing = str(tmp_path / "nowhere")
    line = assert_refused(["train", "--out", missing, "--resume"], "no such run folder")
    assert "--model" not in line
    assert not os.path.exists(missing)
    os.makedirs(tmp_path / "empty")
    assert_refused(["train", "--out", str(tmp_path / "empty"), "--resume"], "nothing to resume")


def test_a_pickled_checkpoint_error_does_not_pass_on_torchs_advice(tmp_path):
    marker = str(tmp_path / "marker")
    for make in (malicious_torch_checkpoint, malicious_plain_pickle):
        path = str(tmp_path / f"{make.__name__}.pt")
        make(path, marker)
        with pytest.raises(UserError, match="corrupt or unreadable checkpoint") as e:
            load_checkpoint(path)
        assert "weights_only" not in str(e.value) and "False" not in str(e.value), str(e.value)
        assert_one_line(str(e.value))
    assert not os.path.exists(marker)


def test_corrupt_images_of_a_folder_dataset_are_one_warning_line(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(6):
        Image.fromarray(np.full((20, 20, 3), i * 40, np.uint8)).save(images / f"ok{i}.png")
    (images / "text.png").write_text("not an image")
    (images / "empty.jpg").write_bytes(b"")
    with open(images / "ok0.png", "rb") as f:
        (images / "cut.png").write_bytes(f.read()[:40])
    out = str(tmp_path / "run")
    code, err = run_cli(["train", "--model", "vae", "--dataset", f"folder:{images}", "--image-size", "16",
                         "--hidden", "4", "4", "--latent-dim", "2", "--set", "model.fc_dim=8", "--steps", "1",
                         "--batch-size", "2", "--device", "cpu", "--quiet", "--out", out,
                         "--sample-every", "1", "--checkpoint-every", "1", "--set", "train.grid_n=4"])
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.strip()]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "skipped 3 unreadable" in warnings[0], err

