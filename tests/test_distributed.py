"""Data-parallel training: 2 CPU processes (gloo, started by torchrun) train like 1 process.

One torchrun launch (tests/helpers_distributed.py) trains a VAE (through the command line), a VQ-VAE and a
β-TCVAE with 2 processes, and continues a 1-process checkpoint with 2 processes; while it runs, this
process trains the same configs with 1 process. The final weights (buffers included: the VQ codebook and
its EMA statistics) must agree within floating-point tolerance, with the same global batch and seed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from helpers_distributed import HALF, STEPS, dp_config
from helpers_trainer import REPO_ROOT
from training import distributed
from training.errors import UserError
from training.trainer import train

HELPER = os.path.join(REPO_ROOT, "tests", "helpers_distributed.py")
# Summation order differs (two half-batch means vs one mean): ~1e-7 after one step, growing to ~6e-6 after
# the 10 steps of these runs. A real mismatch (other noise, other codes restarted, per-shard β-TCVAE
# estimates) makes differences of the size of the Adam steps, lr = 2e-3.
ATOL, RTOL = 5e-5, 1e-4


def weights(run_dir: str) -> dict:
    return load_file(os.path.join(run_dir, "model.safetensors"))


def assert_close_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=ATOL, rtol=RTOL), \
            f"{name} differs by {(a[name].float() - b[name].float()).abs().max():.3g}"


def metrics_log(run_dir: str) -> list:
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Launch the 2-process trainings, train the 1-process references meanwhile, return both folders."""
    root = tmp_path_factory.mktemp("dp")
    one, two = root / "one", root / "two"
    two.mkdir()
    with torch_threads(1):
        train(dp_config("vae", steps=HALF), str(one / "vae-half"), progress=False)
    shutil.copytree(one / "vae-half", two / "resume-1to2")  # a 1-process checkpoint for 2 processes to continue
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS="1")
    launch = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                               "2", HELPER, str(two)], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        with torch_threads(1):
            for model in ("vae", "vqvae", "btcvae"):
                train(dp_config(model), str(one / model), progress=False)
        output, _ = launch.communicate(timeout=300)
    finally:
        if launch.poll() is None:
            launch.kill()
    assert launch.returncode == 0, output[-4000:]
    with open(two / "worker.json") as f:
        seen = json.load(f)
    return {"one": one, "two": two, "seen": seen, "output": output}


class torch_threads:
    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


@pytest.mark.parametrize("model", ["vae", "vqvae", "btcvae"])
def test_two_processes_end_with_the_weights_of_one(runs, model):
    assert runs["seen"]["world_size"] == 2 and runs["seen"]["process_group_backend"] == "gloo"
    assert_close_weights(weights(str(runs["one"] / model)), weights(str(runs["two"] / model)))


def test_the_logged_losses_are_the_global_batch_s(runs):
    for model in ("vae", "vqvae", "btcvae"):
        one, two = metrics_log(str(runs["one"] / model)), metrics_log(str(runs["two"] / model))
        # Rank 0 alone writes: one line per log step, no duplicates.
        assert [r["step"] for r in two] == [r["step"] for r in one] == [5, 10]
        # β-TCVAE: estimates from a rank's half batch would differ (log q(z) uses the whole batch).
        terms = ("loss", "recon", "kl") + {"btcvae": ("mi", "tc", "dwkl"), "vqvae": ("vq",)}.get(model, ())
        for a, b in zip(one, two):
            for term in terms:
                assert b[term] == pytest.approx(a[term], rel=1e-4, abs=2e-6), (model, term)


def test_rank_0_writes_a_complete_run_folder(runs):
    run = runs["two"] / "vae"
    for name in ("config.json", "model.safetensors", "checkpoint.pt", "metrics.jsonl", "samples.png",
                 "reconstructions.png", "DONE"):
        assert (run / name).is_file(), name
    assert not list(run.glob("*.tmp-*"))
    config = json.loads((run / "config.json").read_text())
    # β-TCVAE's log q(z) estimate needs the global training-set size, not a rank's share of it.
    assert json.loads((runs["two"] / "btcvae" / "config.json").read_text())["model"]["dataset_size"] == 1000
    assert config["train"]["batch_size"] == 16  # the global batch, as given
    assert runs["seen"]["cli_exit_code"] == 0
    assert runs["output"].count("trained vae on mnist") == 1  # rank 0 speaks for all


def test_a_batch_that_does_not_split_over_the_processes_is_refused(runs):
    message = runs["seen"]["bad_batch"]
    assert message is not None and "batch_size 15" in message and "2 processes" in message
    assert not (runs["two"] / "bad-batch").exists()


def test_the_tolerance_is_far_below_what_training_changes(runs):
    at_half, at_end = weights(str(runs["one"] / "vae-half")), weights(str(runs["one"] / "vae"))
    assert min(float((at_half[k] - at_end[k]).abs().max()) for k in at_half) > 20 * ATOL


def test_a_1_process_checkpoint_continues_with_2_processes(runs):
    assert runs["seen"]["resumed_step"] == STEPS
    assert_close_weights(weights(str(runs["one"] / "vae")), weights(str(runs["two"] / "resume-1to2")))
    assert [r["step"] for r in metrics_log(str(runs["two"] / "resume-1to2"))] == [5, 10]


def test_a_2_process_checkpoint_continues_with_1_process(runs, tmp_path):
    run_dir = tmp_path / "resume-2to1"
    shutil.copytree(runs["two"] / "vae-half", run_dir)
    run = train(dp_config("vae"), str(run_dir), resume=True, progress=False)
    assert run.step == STEPS
    assert_close_weights(weights(str(runs["one"] / "vae")), weights(str(run_dir)))


# ---- single-process behaviour of the helpers (no process group) ----------------------------------------
def test_outside_torchrun_the_helpers_change_nothing():
    assert distributed.current() is None
    with distributed.process_group(torch.device("cpu")) as ranks:
        assert (ranks.rank, ranks.world_size, ranks.is_main, ranks.is_distributed) == (0, 1, True, False)
        assert distributed.current() is None  # models see a plain batch
    mu = torch.randn(6, 3)
    torch.manual_seed(5)
    expected = torch.randn_like(mu)
    torch.manual_seed(5)
    assert torch.equal(distributed.noise_like(mu), expected)
    rows = torch.randn(12, 4)
    torch.manual_seed(6)
    expected = rows[torch.randint(0, 12, (5,))]
    torch.manual_seed(6)
    assert torch.equal(distributed.random_global_rows(rows, 3, 5), expected)
    a, b = torch.randn(4, 2), torch.randn(4, 5)
    assert distributed.gather_batch(a, b) == (a, b)
    assert distributed.global_mean(a.sum()) == (a.sum(),)


def test_batch_size_must_split_evenly_over_the_processes():
    distributed.check_batch_size(16, 2)
    distributed.check_batch_size(15, 1)
    with pytest.raises(UserError, match="batch_size 15 does not split evenly over 2 processes.*14 or 16"):
        distributed.check_batch_size(15, 2)


def test_launch_environment_is_checked(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(UserError, match="WORLD_SIZE='two' is not an integer"):
        distributed.launch_env()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(UserError, match="inconsistent launch environment"):
        distributed.launch_env()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(UserError, match="MASTER_ADDR.*launch with torchrun"):
        with distributed.process_group(torch.device("cpu")):
            pass
    with pytest.raises(UserError, match="MPS"):
        distributed.device_for_rank(torch.device("mps"), 0)
