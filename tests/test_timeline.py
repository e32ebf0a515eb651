"""Weight snapshots during training, timeline.npz at export, and the explorer's Training tab.

The schedule (log-spaced, the last step always in it, a function of the config alone); snapshots in float16
with their step in the metadata, loadable as float32 models; a run killed between two snapshots and resumed
ends with the same snapshot files, byte for byte, as one never interrupted; `--overwrite` removes them;
export writes timeline.npz with the documented arrays (and `--timeline-only` the same file alone); the
`timeline` endpoint gives pictures for a run with a timeline and a one-line note for a run without one.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from gradio_client import Client
from PIL import Image
from safetensors.torch import load_file

import training.export
import training.trainer
from explorer.points import Points
from explorer.runs import RunRegistry
from explorer.tabs.timeline import NO_TIMELINE, TimelineTab
from explorer.ui import build_app, launch_options
from helpers_app import free_port, torch_threads
from helpers_trainer import tiny_config
from training.errors import UserError
from training.export import export_run
from training.latent_map import pca_2d
from training.runfolder import (SNAPSHOTS_DIR, TIMELINE_FILE, list_snapshots, load_latents, load_snapshot,
                                load_timeline, read_weights_metadata, snapshot_path)
from training.trainer import snapshot_steps, train

N_STEPS = 60
SNAPSHOTS = 10


def snapshot_config(model: str = "vae", steps: int = N_STEPS, snapshots: int = SNAPSHOTS):
    return tiny_config(model, steps=steps, snapshots=snapshots, checkpoint_every=10)


def snapshot_digests(run_dir: str) -> dict:
    found = {}
    for step in list_snapshots(run_dir):
        with open(snapshot_path(run_dir, step), "rb") as f:
            found[step] = hashlib.sha256(f.read()).hexdigest()
    return found


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny VAE trained with snapshots and exported (the 2-D map by PCA: UMAP's first fit compiles for a
    minute, and the timeline does not depend on the map)."""
    out = str(tmp_path_factory.mktemp("timeline") / "vae")
    fit_map = training.export.fit_map
    training.export.fit_map = lambda mu, *args, **kwargs: pca_2d(mu)
    try:
        with torch_threads(1):
            run = train(snapshot_config(), out, progress=False)
            export_run(out, n=200)
    finally:
        training.export.fit_map = fit_map
    return SimpleNamespace(path=out, run=run)


# ---- the schedule --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("steps", [1000, 5000, 20_000, 100_000, 1_000_000])
def test_schedule_is_log_spaced_from_step_100_to_the_last_step(steps):
    chosen = snapshot_steps(steps, 10)
    assert 8 <= len(chosen) <= 12
    assert chosen[0] == 100 and chosen[-1] == steps and chosen == sorted(set(chosen))
    ratios = np.diff(np.log(chosen))
    np.testing.assert_allclose(ratios, np.log(steps / 100) / (len(chosen) - 1), rtol=0.05)
    assert snapshot_steps(steps, 10) == chosen  # a function of the config alone


def test_schedule_of_short_runs_and_edge_cases():
    assert snapshot_steps(1000, 0) == [] and snapshot_steps(0, 10) == []
    assert snapshot_steps(500, 1) == [500] and snapshot_steps(1, 10) == [1]
    short = snapshot_steps(N_STEPS, SNAPSHOTS)  # a run under 1,000 steps starts at a tenth of it
    assert short[0] == 6 and short[-1] == N_STEPS and 8 <= len(short) <= SNAPSHOTS
    assert all(4 <= len(snapshot_steps(n, 5)) <= 5 and snapshot_steps(n, 5)[-1] == n for n in range(50, 3000, 37))


def test_snapshot_count_is_checked():
    with pytest.raises(UserError, match="train.snapshots"):
        train(tiny_config(snapshots=-1), "/nonexistent/never-created", progress=False)


# ---- snapshots in the run folder -----------------------------------------------------------------------------
def test_snapshots_are_float16_with_their_step_and_load_as_float32_models(exported):
    steps = list_snapshots(exported.path)
    assert steps == snapshot_steps(N_STEPS, SNAPSHOTS)
    for step in steps:
        path = snapshot_path(exported.path, step)
        assert os.path.basename(path) == f"step_{step:06d}.safetensors"
        assert read_weights_metadata(path)["step"] == str(step)
    tensors = load_file(snapshot_path(exported.path, steps[-1]))
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}
    model = load_snapshot(exported.path, steps[-1])
    assert not model.training and all(p.dtype == torch.float32 for p in model.parameters())
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(model.reconstruct(x), exported.run.model.reconstruct(x), rtol=0, atol=2e-2)
    early = load_snapshot(exported.path, steps[0])
    assert not torch.allclose(early.reconstruct(x), model.reconstruct(x), atol=1e-3)


def test_a_run_killed_between_snapshots_resumes_to_the_same_snapshot_files(tmp_path, monkeypatch):
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    train(snapshot_config(), straight, progress=False)

    # Killed right after writing the snapshot at step 36: its last checkpoint is step 30, so the resumed
    # run computes step 36 again, and a file left there by the killed run (torn here) must not survive.
    kill_after = 36
    assert kill_after in snapshot_steps(N_STEPS, SNAPSHOTS)
    real_save = training.trainer.save_snapshot

    def save_then_die(out_dir, model, step):
        real_save(out_dir, model, step)
        if step == kill_after:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(training.trainer, "save_snapshot", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(snapshot_config(), killed, progress=False)
    monkeypatch.setattr(training.trainer, "save_snapshot", real_save)
    assert max(list_snapshots(killed)) == kill_after and not os.path.exists(os.path.join(killed, "DONE"))
    with open(snapshot_path(killed, kill_after), "r+b") as f:
        f.truncate(100)

    train(snapshot_config(), killed, resume=True, progress=False)
    assert snapshot_digests(killed) == snapshot_digests(straight)
    assert list_snapshots(killed) == snapshot_steps(N_STEPS, SNAPSHOTS)


def test_overwrite_removes_snapshots_and_the_timeline(tmp_path):
    out = str(tmp_path / "run")
    train(snapshot_config(steps=20, snapshots=3), out, progress=False)
    assert len(list_snapshots(out)) == 3
    with open(os.path.join(out, TIMELINE_FILE), "wb") as f:
        f.write(b"stale")
    train(tiny_config(steps=5), out, overwrite=True, progress=False)
    assert list_snapshots(out) == [] and not os.path.exists(os.path.join(out, SNAPSHOTS_DIR))
    assert not os.path.exists(os.path.join(out, TIMELINE_FILE))


# ---- timeline.npz ----------------------------------------------------------------------------------------------
def test_export_writes_timeline_npz_with_the_documented_arrays(exported):
    a = load_timeline(exported.path)
    s = len(snapshot_steps(N_STEPS, SNAPSHOTS))
    assert set(a) == {"steps", "kl_per_dim", "index", "inputs", "reconstructions", "samples", "kl_points"}
    assert a["steps"].tolist() == snapshot_steps(N_STEPS, SNAPSHOTS) and a["steps"].dtype == np.int64
    assert a["kl_per_dim"].shape == (s, 4) and a["kl_per_dim"].dtype == np.float32
    assert a["index"].shape == (8,) and a["inputs"].shape == (8, 1, 28, 28) and a["inputs"].dtype == np.uint8
    for key in ("reconstructions", "samples"):
        assert a[key].shape == (s, 8, 1, 28, 28) and a[key].dtype == np.uint8
    assert not np.array_equal(a["reconstructions"][0], a["reconstructions"][-1])
    latents = load_latents(exported.path)
    test_points = int((latents["split"] == 1).sum())
    assert a["kl_points"].tolist() == [test_points]
    if test_points == len(latents["split"]):
        # The last snapshot is the final model in float16: the same KL per dimension up to that rounding.
        np.testing.assert_allclose(a["kl_per_dim"][-1], latents["kl_per_dim"], rtol=0.02, atol=0.02)
    assert os.path.getsize(os.path.join(exported.path, TIMELINE_FILE)) < 200_000


def test_timeline_only_rewrites_the_same_file_from_the_exported_points(exported, tmp_path):
    copy = str(tmp_path / "copy")
    shutil.copytree(exported.path, copy)
    os.remove(os.path.join(copy, TIMELINE_FILE))
    summary = export_run(copy, timeline_only=True)
    assert summary["snapshots"] == len(snapshot_steps(N_STEPS, SNAPSHOTS))
    before, after = load_timeline(exported.path), load_timeline(copy)
    assert set(before) == set(after)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)


def test_vq_timeline_has_no_samples_and_zero_kl(tmp_path):
    out = str(tmp_path / "vq")
    train(snapshot_config("vqvae", steps=20, snapshots=3), out, progress=False)
    export_run(out, n=50, timeline_only=True)
    a = load_timeline(out)
    assert "samples" not in a and len(a["steps"]) == 3 and not np.any(a["kl_per_dim"])


def test_timeline_only_without_snapshots_is_a_one_line_error(tmp_path):
    out = str(tmp_path / "plain")
    train(tiny_config(steps=5), out, progress=False)
    with pytest.raises(UserError, match="--snapshots"):
        export_run(out, timeline_only=True)


# ---- the explorer's Training tab ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs_root(exported, tmp_path_factory):
    root = tmp_path_factory.mktemp("timeline-runs")
    shutil.copytree(exported.path, root / "with-timeline")
    shutil.copytree(exported.path, root / "without-timeline", ignore=shutil.ignore_patterns(TIMELINE_FILE))
    return str(root)


def test_timeline_handler_snaps_to_snapshots_and_explains_a_missing_timeline(runs_root):
    tab = TimelineTab(SimpleNamespace(points=Points(RunRegistry([runs_root]))))
    steps = snapshot_steps(N_STEPS, SNAPSHOTS)
    step, caption, pairs, samples, chart = tab.timeline("with-timeline", steps[3] + 1)
    assert step == steps[3] and f"Step {steps[3]}" in caption
    with Image.open(pairs) as im:
        assert im.size[0] > 2 * im.size[1]  # 8 inputs over 8 reconstructions
    assert all(os.path.isfile(p) for p in (pairs, samples, chart))
    assert tab.shift_later("with-timeline", steps[3])[0] == steps[4]
    assert tab.shift_earlier("with-timeline", steps[0])[0] == steps[0]
    _, note, *pictures = tab.timeline("without-timeline", 10)
    assert note == NO_TIMELINE and "\n" not in note and "--snapshots" in note and pictures == [None] * 3


def test_timeline_endpoint_through_the_api(runs_root):
    demo = build_app([runs_root])
    port = free_port()
    with torch_threads(1):
        demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **launch_options(demo))
        try:
            client = Client(f"http://127.0.0.1:{port}/", verbose=False)
            assert "/timeline" in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
            step, caption, pairs, samples, chart = client.predict("with-timeline", N_STEPS, api_name="/timeline")
            assert step == N_STEPS and "Step" in caption
            for path in (pairs, samples, chart):
                with Image.open(path) as im:
                    assert im.size[0] > 0
            _, note, *pictures = client.predict("without-timeline", 0, api_name="/timeline")
            assert "--snapshots 10" in note and pictures == [None] * 3
        finally:
            demo.close()
