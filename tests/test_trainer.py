"""The trainer: run folders, exact resume (simulated and real kills), non-finite losses, presets."""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import signal
import time

import pytest
import torch
from safetensors.torch import load_file

from helpers_trainer import REPO_ROOT, looks_like_valid_run, python_m_training, tiny_cli_args, tiny_config
from training.config import ModelConfig
from training.errors import UserError
from training.runfolder import load_checkpoint, load_run, load_weights, read_config, write_config
from training.trainer import train


def state_of(path: str) -> dict:
    return load_file(os.path.join(path, "model.safetensors"))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs by {(a[name].float() - b[name].float()).abs().max()}"


def metrics_lines(path: str) -> list:
    with open(os.path.join(path, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_run_folder_has_every_file_and_load_run_rebuilds_the_model(tmp_path):
    out = str(tmp_path / "run")
    run = train(tiny_config(steps=20), out, progress=False)

    assert run.step == 20
    for name in ("config.json", "model.safetensors", "checkpoint.pt", "metrics.jsonl", "samples.png",
                 "reconstructions.png", "samples_10.png", "reconstructions_20.png", "DONE"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert open(os.path.join(out, "DONE")).read().strip() == "20"
    assert not glob.glob(os.path.join(out, "*.tmp-*"))

    lines = metrics_lines(out)
    assert [line["step"] for line in lines] == [5, 10, 15, 20]
    for line in lines:
        assert {"loss", "recon", "kl", "images_per_s", "time"} <= set(line)
        assert line["images_per_s"] > 0 and abs(line["loss"] - (line["recon"] + line["kl"])) < 1e-3 * line["loss"]
    assert lines[-1]["loss"] < lines[0]["loss"]  # it learns something in 20 steps

    cfg = read_config(os.path.join(out, "config.json"))
    assert cfg.model.image_size == 28  # filled from the dataset
    # A VAE's config.json holds only the VAE's fields (β-TCVAE's dataset_size is checked in test_distributed).
    saved = json.load(open(os.path.join(out, "config.json")))["model"]
    assert set(saved) == {f.name for f in dataclasses.fields(ModelConfig)} and "dataset_size" not in saved

    checkpoint = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    assert checkpoint["step"] == 20 and set(checkpoint["rng"]) >= {"python", "numpy", "torch", "batches"}

    loaded = load_run(out)
    assert loaded.step == 20 and not loaded.model.training
    x = torch.rand(6, 1, 28, 28)
    torch.testing.assert_close(loaded.model.reconstruct(x), run.model.reconstruct(x), rtol=0, atol=1e-6)
    assert loaded.config.to_dict() == run.config.to_dict()


@pytest.mark.parametrize("model", ["vae", "vqvae"])
def test_resume_after_a_stop_at_step_k_matches_an_uninterrupted_run(tmp_path, model):
    n, k = 30, 13  # k is neither a log nor a checkpoint step of the uninterrupted run
    straight = str(tmp_path / "straight")
    train(tiny_config(model, steps=n), straight, progress=False)

    stopped = str(tmp_path / "stopped")
    train(tiny_config(model, steps=k), stopped, progress=False)
    assert load_checkpoint(os.path.join(stopped, "checkpoint.pt"))["step"] == k
    # A killed run may have logged past its checkpoint, and torn its last line: both must go.
    with open(os.path.join(stopped, "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": k + 1, "loss": 1.0}) + "\n" + '{"step": 1')
    resumed = train(tiny_config(model, steps=n), stopped, resume=True, progress=False)

    assert resumed.step == n
    assert_same_weights(state_of(straight), state_of(stopped))
    steps = [line["step"] for line in metrics_lines(stopped)]
    assert steps == sorted(set(steps)) and k + 1 not in steps
    straight_loss = {line["step"]: line["loss"] for line in metrics_lines(straight)}
    for line in metrics_lines(stopped):
        if line["step"] in straight_loss:
            assert line["loss"] == straight_loss[line["step"]]
    assert open(os.path.join(stopped, "DONE")).read().strip() == str(n)


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path):
    """A real kill: SIGKILL the CLI process once its first checkpoint exists, then --resume it."""
    n = 60
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    args = dict(steps=n, checkpoint_every=5, sample_every=1000)
    reference = python_m_training(tiny_cli_args(straight, **args))
    victim = python_m_training(tiny_cli_args(killed, **args))
    checkpoint = os.path.join(killed, "checkpoint.pt")
    deadline = time.time() + 120
    while not os.path.exists(checkpoint) and victim.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.communicate()
    assert victim.returncode == -signal.SIGKILL
    assert not os.path.exists(os.path.join(killed, "DONE")), "the run finished before it could be killed"
    killed_at = load_checkpoint(checkpoint)["step"]
    assert 0 < killed_at < n

    resume = python_m_training(tiny_cli_args(killed, **args) + ["--resume"])
    _, err = resume.communicate(timeout=300)
    assert resume.returncode == 0, err
    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err

    assert_same_weights(state_of(straight), state_of(killed))
    steps = [line["step"] for line in metrics_lines(killed)]
    assert steps == [line["step"] for line in metrics_lines(straight)]


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    out = str(tmp_path / "run")
    train(tiny_config(steps=10), out, progress=False)
    before = {name: hashlib.sha256(open(os.path.join(out, name), "rb").read()).hexdigest()
              for name in ("checkpoint.pt", "model.safetensors")}

    # lr 1e30 blows the weights up within a step or two; no checkpoint is due before step 1000.
    proc = python_m_training(tiny_cli_args(out, steps=60, lr="1e30", checkpoint_every=1000) + ["--resume"])
    _, err = proc.communicate(timeout=120)

    assert proc.returncode == 2
    assert err.startswith("error: non-finite loss at step ") and err.count("\n") == 1 and "Traceback" not in err
    assert "the last good checkpoint at step 10 is intact" in err
    after = {name: hashlib.sha256(open(os.path.join(out, name), "rb").read()).hexdigest() for name in before}
    assert after == before
    assert load_run(out).step == 10
    assert not os.path.exists(os.path.join(out, "DONE"))
    assert all(torch.isfinite(torch.tensor(line["loss"])) for line in metrics_lines(out))


def test_non_finite_loss_names_the_step_when_no_checkpoint_exists_yet(tmp_path):
    with pytest.raises(UserError, match=r"non-finite loss at step \d+ .*no checkpoint had been written yet"):
        train(tiny_config(steps=30, lr=1e30, checkpoint_every=1000, log_every=1000), str(tmp_path / "r"),
              progress=False)
    assert not looks_like_valid_run(str(tmp_path / "r"))


def test_a_folder_that_holds_a_run_needs_resume_or_overwrite(tmp_path):
    out = str(tmp_path / "run")
    train(tiny_config(steps=5, checkpoint_every=5), out, progress=False)
    open(os.path.join(out, "latents.npz"), "wb").write(b"stale export of the old run")
    with pytest.raises(UserError, match="already holds a run"):
        train(tiny_config(steps=5), out, progress=False)

    train(tiny_config(steps=6, seed=4), out, progress=False, overwrite=True)
    assert not os.path.exists(os.path.join(out, "latents.npz"))
    assert not os.path.exists(os.path.join(out, "samples_5.png"))
    assert load_run(out).step == 6


def test_resuming_a_finished_run_with_more_steps_continues_it(tmp_path):
    out = str(tmp_path / "run")
    train(tiny_config(steps=10), out, progress=False)
    run = train(tiny_config(steps=15), out, resume=True, progress=False)
    assert run.step == 15 and open(os.path.join(out, "DONE")).read().strip() == "15"
    with pytest.raises(UserError, match="already past train.steps=12"):
        train(tiny_config(steps=12), out, resume=True, progress=False)


def test_bad_names_fail_before_a_folder_is_created(tmp_path):
    cfg = tiny_config()
    cfg.model.name = "not-a-model"
    with pytest.raises(UserError, match="unknown model 'not-a-model'"):
        train(cfg, str(tmp_path / "a"), progress=False)
    cfg = tiny_config()
    cfg.data.name = "not-a-dataset"
    with pytest.raises(UserError, match="not-a-dataset"):
        train(cfg, str(tmp_path / "b"), progress=False)
    cfg = tiny_config()
    cfg.model.hidden = [8, "x"]
    with pytest.raises(UserError, match="hidden"):
        train(cfg, str(tmp_path / "c"), progress=False)
    cfg = tiny_config(batch_size=0)
    with pytest.raises(UserError, match="train.batch_size must be a positive integer"):
        train(cfg, str(tmp_path / "d"), progress=False)
    assert os.listdir(tmp_path) == []


def test_load_run_refuses_missing_corrupt_and_mismatched_weights(tmp_path):
    out = str(tmp_path / "run")
    train(tiny_config(steps=5, checkpoint_every=5), out, progress=False)

    with pytest.raises(UserError, match="no such run folder"):
        load_run(str(tmp_path / "nowhere"))
    cfg = read_config(os.path.join(out, "config.json"))
    cfg.model.latent_dim = 6
    write_config(os.path.join(out, "config.json"), cfg)
    with pytest.raises(UserError, match="do not match the model"):
        load_run(out)
    data = json.load(open(os.path.join(out, "config.json")))
    data["format_version"] = 99
    json.dump(data, open(os.path.join(out, "config.json"), "w"))
    with pytest.raises(UserError, match="format version 99"):
        load_run(out)
    cfg.model.latent_dim = 4
    write_config(os.path.join(out, "config.json"), cfg)
    open(os.path.join(out, "model.safetensors"), "wb").write(b"\x00" * 20)
    with pytest.raises(UserError, match="not a readable safetensors file"):
        load_run(out)
    os.remove(os.path.join(out, "model.safetensors"))
    with pytest.raises(UserError, match="no model.safetensors"):
        load_run(out)


class PickledObject:
    """Any class: torch.load(weights_only=True) must refuse to rebuild it."""


def test_checkpoint_loading_refuses_pickled_objects(tmp_path):
    path = str(tmp_path / "checkpoint.pt")
    torch.save({"step": 1, "payload": PickledObject()}, path)
    with pytest.raises(UserError, match="corrupt or unreadable checkpoint"):
        load_checkpoint(path)


PRESETS = sorted(glob.glob(os.path.join(REPO_ROOT, "training", "configs", "*.json")))


def test_there_is_a_preset_per_model_family():
    names = {read_config(p).model.name for p in PRESETS}
    assert names >= {"ae", "vae", "vae-mlp", "resvae", "beta-vae", "annealed-vae", "btcvae", "vqvae"}


@pytest.mark.parametrize("path", PRESETS, ids=[os.path.basename(p) for p in PRESETS])
def test_every_preset_loads_and_builds(path):
    from training.data import dataset_names
    from training.models import build_model

    cfg = read_config(path)
    assert cfg.data.name in dataset_names()
    cfg.model.fill_from_data(cfg.model.image_size, cfg.model.channels, 1000)
    model = build_model(cfg.model)
    x = torch.rand(2, cfg.model.channels, cfg.model.image_size, cfg.model.image_size)
    assert model.reconstruct(x).shape == x.shape
    if os.path.basename(path).startswith("dsprites_"):  # Burgess / Locatello architecture and batch
        assert (cfg.model.hidden, cfg.model.fc_dim, cfg.model.latent_dim, cfg.model.kernel_size) == \
               ([32, 32, 64, 64], 256, 10, 4)
        assert cfg.model.likelihood == "bernoulli" and cfg.train.batch_size == 64


def test_load_weights_reads_the_step_from_metadata(tmp_path):
    out = str(tmp_path / "run")
    run = train(tiny_config(steps=5, checkpoint_every=5), out, progress=False)
    from training.models import build_model

    model = build_model(run.config.model)
    assert load_weights(model, os.path.join(out, "model.safetensors")) == 5


SUBNORMAL = 1e-39  # below float32's smallest normal number, 1.18e-38


def flushes_subnormals() -> bool:
    """Whether CPU arithmetic in this thread treats subnormal floats as zero right now."""
    return bool((torch.tensor([SUBNORMAL]) * 1.0).item() == 0.0)


def test_the_training_loop_flushes_subnormals_on_the_cpu_and_restores_them_after(tmp_path, monkeypatch):
    import training.trainer as trainer

    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush subnormals")
    assert not flushes_subnormals()
    seen = []
    real_step = trainer.train_step

    def observed_step(*args, **kwargs):
        seen.append(flushes_subnormals())
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", observed_step)
    train(tiny_config(steps=3), str(tmp_path / "run"), progress=False)
    assert seen == [True, True, True]
    assert not flushes_subnormals()  # the process is left as it was


def test_subnormals_are_flushed_only_for_the_cpu():
    from training.trainer import subnormals_flushed

    if not torch.set_flush_denormal(False):
        pytest.skip("this CPU cannot flush subnormals")
    with subnormals_flushed(torch.device("cpu")):
        assert flushes_subnormals()
    assert not flushes_subnormals()
    with subnormals_flushed(torch.device("meta")):  # stands for an accelerator: its arithmetic is its own
        assert not flushes_subnormals()


def test_the_training_log_reads_back_with_its_throughput_windows(tmp_path):
    from training.runfolder import logged_images_per_s, read_log

    out = str(tmp_path / "run")
    train(tiny_config(steps=20, log_every=5), out, progress=False)
    with open(os.path.join(out, "metrics.jsonl"), "a", encoding="utf-8") as f:
        f.write('{"step": 25, "loss"')  # a line torn by a kill
    records = read_log(out)
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    # Windows 10-15 and 15-20, 5 steps of 16 images each: harmonic, not arithmetic, mean of the speeds.
    speeds = [records[2]["images_per_s"], records[3]["images_per_s"]]
    expected = 160 / (80 / speeds[0] + 80 / speeds[1])
    assert logged_images_per_s(records, 10, 16) == pytest.approx(expected)
    with pytest.raises(ValueError):
        logged_images_per_s(records, 20, 16)
    assert read_log(str(tmp_path / "nothing-here")) == []
