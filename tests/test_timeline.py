"""Weight snapshots during training, timeline.npz at export, and the explorer's Training tab.

The schedule (log-spaced, the last step always in it, a function of the config alone); snapshots in float16
with their step in the metadata, loadable as float32 models; a run killed between two snapshots and resumed
ends with the same snapshot files, byte for byte, as one never interrupted; `--overwrite` removes them;
export writes timeline.npz with the documented arrays (and `--timeline-only` the same file alone); a
VQ-VAE's timeline records its codebook use per snapshot (as metrics.json's `vq` section defines it) in place
of the KL per dimension, and a malformed one is refused with one line; the `timeline` endpoint gives
pictures for a run with a timeline (a VQ-VAE: its codebook-use chart and no prior draws) and a one-line note
for a run without one.
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
from explorer.charts import PALETTE, codebook_use_figure
from explorer.runs import RunRegistry
from explorer.tabs.timeline import CODEBOOK_LABEL, KL_LABEL, NO_TIMELINE, TimelineTab
from explorer.ui import build_app, launch_options
from helpers_app import free_port, torch_threads
from helpers_trainer import tiny_config
from training import cli
from training.encoding import open_dataset
from training.errors import UserError
from training.export import export_run
from training.latent_map import pca_2d
from training.likelihood import codebook_usage
from training.runfolder import (SNAPSHOTS_DIR, TIMELINE_FILE, list_snapshots, load_latents, load_run,
                                load_snapshot, load_timeline, read_weights_metadata, save_timeline,
                                snapshot_path)
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


VQ_STEPS, VQ_SNAPSHOTS = 30, 4


@pytest.fixture(scope="module")
def vq_exported(tmp_path_factory):
    """A tiny VQ-VAE trained with snapshots and exported (its map by PCA, as `exported`)."""
    out = str(tmp_path_factory.mktemp("timeline-vq") / "vq")
    fit_map = training.export.fit_map
    training.export.fit_map = lambda mu, *args, **kwargs: pca_2d(mu)
    try:
        with torch_threads(1):
            run = train(snapshot_config("vqvae", steps=VQ_STEPS, snapshots=VQ_SNAPSHOTS), out, progress=False)
            export_run(out, n=60)
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


def test_vq_export_records_the_codebook_use_of_each_snapshot(vq_exported):
    a = load_timeline(vq_exported.path)
    steps = snapshot_steps(VQ_STEPS, VQ_SNAPSHOTS)
    num_codes = int(vq_exported.run.model.config.num_codes)
    assert set(a) == {"steps", "code_counts", "perplexity", "codes_used", "code_points", "index", "inputs",
                      "reconstructions"}
    assert a["steps"].tolist() == steps
    assert a["code_counts"].shape == (len(steps), num_codes) and a["code_counts"].dtype == np.int64
    assert a["perplexity"].shape == a["codes_used"].shape == (len(steps),)
    assert a["reconstructions"].shape == (len(steps), 8, 1, 28, 28)
    assert not np.array_equal(a["reconstructions"][0], a["reconstructions"][-1])

    latents = load_latents(vq_exported.path)
    measured = latents["index"][latents["split"] == 1]
    assert a["code_points"].tolist() == [len(measured)]
    dataset = open_dataset(load_run(vq_exported.path))
    images = dataset.get(measured)[0].float().div(255.0)
    for k in (0, len(steps) - 1):
        # The codes of each snapshot, counted here from the encoder itself, scored as evaluate scores them.
        with torch.no_grad():
            codes = load_snapshot(vq_exported.path, steps[k]).encode(images).codes.numpy()
        np.testing.assert_array_equal(a["code_counts"][k], np.bincount(codes.reshape(-1), minlength=num_codes))
        usage = codebook_usage(codes, num_codes)
        assert a["perplexity"][k] == pytest.approx(usage["perplexity"], rel=1e-6)
        assert a["codes_used"][k] == pytest.approx(usage["codes_used"], rel=1e-6)
    assert a["code_counts"].sum(1).tolist() == [codes.size] * len(steps)


def test_vq_timeline_only_through_the_cli_rewrites_the_same_arrays(vq_exported, tmp_path, capsys):
    copy = str(tmp_path / "copy")
    shutil.copytree(vq_exported.path, copy)
    os.remove(os.path.join(copy, TIMELINE_FILE))
    assert cli.main(["export", copy, "--timeline-only"]) == 0
    assert "codebook use over" in capsys.readouterr().out
    before, after = load_timeline(vq_exported.path), load_timeline(copy)
    assert set(before) == set(after)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)


def _bad_kl_and_codes(a):
    a["kl_per_dim"] = np.zeros((len(a["steps"]), 4), np.float32)


def _bad_perplexity_above_codebook(a):
    a["perplexity"] = a["perplexity"] + a["code_counts"].shape[1]


MALFORMED_VQ = {
    "both kinds": (_bad_kl_and_codes, "one of the two"),
    "neither kind": (lambda a: a.pop("code_counts"), "one of the two"),
    "negative counts": (lambda a: a.__setitem__("code_counts", -a["code_counts"] - 1), "code_counts"),
    "fractional counts": (lambda a: a.__setitem__("code_counts", a["code_counts"] + 0.5), "code_counts"),
    "a row short": (lambda a: a.__setitem__("code_counts", a["code_counts"][1:]), "code_counts"),
    "no perplexity": (lambda a: a.pop("perplexity"), "perplexity"),
    "perplexity over K": (_bad_perplexity_above_codebook, "perplexity"),
    "nan perplexity": (lambda a: a["perplexity"].__setitem__(0, np.nan), "perplexity"),
    "codes used over 1": (lambda a: a.__setitem__("codes_used", a["codes_used"] + 1.5), "codes_used"),
    "prior draws": (lambda a: a.__setitem__("samples", a["reconstructions"]), "samples"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED_VQ))
def test_a_malformed_vq_timeline_is_refused_with_one_line(vq_exported, tmp_path, case):
    spoil, reason = MALFORMED_VQ[case]
    arrays = {k: np.array(v) for k, v in load_timeline(vq_exported.path).items()}
    spoil(arrays)
    run = str(tmp_path / "run")
    shutil.copytree(vq_exported.path, run)
    save_timeline(run, arrays)
    with pytest.raises(UserError, match=reason) as refused:
        load_timeline(run)
    assert "\n" not in str(refused.value) and str(refused.value).startswith(TIMELINE_FILE)
    # The Training tab says it in its note, with no pictures, instead of failing.
    tab = TimelineTab(SimpleNamespace(points=Points(RunRegistry([str(tmp_path)]))))
    _, note, *pictures = tab.show_run("run")
    assert reason in note and "\n" not in note and pictures == [None] * 3


def test_codebook_use_chart_draws_one_bar_per_used_code_most_used_first():
    counts = np.array([0, 5, 40, 0, 1, 12, 0, 3])
    im = codebook_use_figure(counts, perplexity=3.2, codes_used=5 / 8)
    blue = tuple(int(PALETTE[0][i:i + 2], 16) for i in (1, 3, 5))
    pixels = np.asarray(im)
    bar_columns = np.all(pixels == blue, axis=2).any(axis=0)
    runs = np.flatnonzero(np.diff(bar_columns.astype(np.int8)) == 1)
    assert len(runs) == 5  # five used codes, five bars
    heights = [int(np.all(pixels[:, x + 2] == blue, axis=1).sum()) for x in runs]
    assert heights == sorted(heights, reverse=True) and heights[0] > 4 * heights[-1]
    with pytest.raises(UserError):
        codebook_use_figure([3, -1], 1.0, 0.5)


def test_timeline_only_without_snapshots_is_a_one_line_error(tmp_path):
    out = str(tmp_path / "plain")
    train(tiny_config(steps=5), out, progress=False)
    with pytest.raises(UserError, match="--snapshots"):
        export_run(out, timeline_only=True)


# ---- the explorer's Training tab ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs_root(exported, vq_exported, tmp_path_factory):
    root = tmp_path_factory.mktemp("timeline-runs")
    shutil.copytree(exported.path, root / "with-timeline")
    shutil.copytree(exported.path, root / "without-timeline", ignore=shutil.ignore_patterns(TIMELINE_FILE))
    shutil.copytree(vq_exported.path, root / "vq-timeline")
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


def test_training_tab_shows_a_vq_runs_codebook_use_and_no_prior_draws(runs_root, vq_exported):
    tab = TimelineTab(SimpleNamespace(points=Points(RunRegistry([runs_root]))))
    steps = snapshot_steps(VQ_STEPS, VQ_SNAPSHOTS)
    a = load_timeline(vq_exported.path)
    charts = []
    for k in (0, len(steps) - 1):
        step, caption, pairs, samples, chart = tab.timeline("vq-timeline", steps[k])
        assert step == steps[k] and samples is None and "\n" not in caption
        assert f"perplexity {a['perplexity'][k]:.1f}" in caption and "no N(0, I) prior" in caption
        with Image.open(pairs) as im:
            assert im.size[0] > 2 * im.size[1]
        with Image.open(chart) as im:
            charts.append(np.asarray(im.convert("RGB")))
    assert not np.array_equal(*charts)  # the codebook use is drawn from its own step

    # A run switch hides the prior draws and names the chart; back on a Gaussian run both return.
    _, _, _, samples, chart = tab.show_run("vq-timeline")
    assert samples["visible"] is False and samples["value"] is None
    assert chart["label"] == CODEBOOK_LABEL and os.path.isfile(chart["value"])
    _, _, _, samples, chart = tab.show_run("with-timeline")
    assert samples["visible"] is True and os.path.isfile(samples["value"]) and chart["label"] == KL_LABEL


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
            step, caption, pairs, samples, chart = client.predict("vq-timeline", 0, api_name="/timeline")
            assert step == snapshot_steps(VQ_STEPS, VQ_SNAPSHOTS)[0] and "perplexity" in caption
            assert samples is None and os.path.isfile(pairs) and os.path.isfile(chart)
            _, note, *pictures = client.predict("without-timeline", 0, api_name="/timeline")
            assert "--snapshots 10" in note and pictures == [None] * 3
        finally:
            demo.close()
