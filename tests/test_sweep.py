"""`python -m training sweep`: a grid of tiny runs is trained, evaluated and tabulated; reruns continue it."""
from __future__ import annotations

import csv
import json
import math
import os

import pytest

from helpers_trainer import tiny_config
from training.runfolder import write_config
from training import cli
from training.errors import UserError
from training.sweep import (EvalOptions, mean_over_seeds, parse_grid, plan_runs, run_in_slots, run_name,
                            split_values)

EVAL_FLAGS = ["--k", "5", "--n-test", "100", "--eval-device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def base_config(tmp_path_factory):
    """A tiny β-VAE (MNIST subset, 2 conv stages, 10 steps) as a config file."""
    cfg = tiny_config("beta-vae", steps=10, checkpoint_every=10, sample_every=10)
    path = str(tmp_path_factory.mktemp("cfg") / "tiny.json")
    write_config(path, cfg)
    return path


def read_csv(path: str) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_2x1_grid_is_trained_evaluated_and_tabulated(base_config, tmp_path, capsys):
    out = str(tmp_path / "sweep")
    argv = ["sweep", "--config", base_config, "--grid", "beta=1,4", "seed=3", "--out", out] + EVAL_FLAGS
    assert cli.main(argv) == 0

    rows = read_csv(os.path.join(out, "summary.csv"))
    assert [r["run"] for r in rows] == ["beta-1_seed-3", "beta-4_seed-3"]
    assert [r["beta"] for r in rows] == ["1", "4"] and {r["seed"] for r in rows} == {"3"}
    for row in rows:
        assert row["status"] == "ok" and row["step"] == "10"
        run = os.path.join(out, row["run"])
        metrics = json.load(open(os.path.join(run, "metrics.json")))
        assert float(row["elbo"]) == pytest.approx(metrics["elbo"]) and math.isfinite(float(row["elbo"]))
        assert float(row["iw_nll"]) == pytest.approx(metrics["iw_nll"])
        assert metrics["iw_k"] == 5 and metrics["n_test"] == 100
        assert json.load(open(os.path.join(run, "config.json")))["model"]["beta"] == float(row["beta"])
    # A larger β pays for a smaller KL: the two runs really are different models.
    assert float(rows[1]["kl"]) < float(rows[0]["kl"])

    markdown = open(os.path.join(out, "summary.md")).read()
    assert markdown.startswith("| run | beta | seed | status | step |") and "beta-4_seed-3" in markdown
    assert "beta-4_seed-3" in capsys.readouterr().out  # the table is printed too
    manifest = json.load(open(os.path.join(out, "sweep.json")))
    assert manifest["grid"] == {"beta": [1, 4], "seed": [3]} and len(manifest["runs"]) == 2

    # Running it again keeps the finished, scored runs.
    weights = os.path.join(out, "beta-1_seed-3", "model.safetensors")
    before = os.path.getmtime(weights), os.path.getmtime(os.path.join(out, "beta-1_seed-3", "metrics.json"))
    assert cli.main(argv) == 0
    assert "kept, scores kept" in capsys.readouterr().out
    assert (os.path.getmtime(weights), os.path.getmtime(os.path.join(out, "beta-1_seed-3", "metrics.json"))) == before

    # The same folder with another learning rate is not silently reused.
    assert cli.main(argv + ["--set", "train.lr=0.01"]) == 1
    printed = capsys.readouterr().out
    assert "train.lr is 0.002 there, 0.01 in this sweep" in printed and "--overwrite" in printed
    assert {r["status"][:7] for r in read_csv(os.path.join(out, "summary.csv"))} == {"failed:"}


def test_a_bad_grid_fails_before_anything_is_trained(base_config, tmp_path, capsys):
    out = str(tmp_path / "sweep")
    assert cli.main(["sweep", "--config", base_config, "--grid", "beta=4,-1", "--out", out] + EVAL_FLAGS) == 2
    assert "grid point beta=-1" in capsys.readouterr().err
    assert not os.path.exists(out)
    assert cli.main(["sweep", "--config", base_config, "--grid", "betta=1,2", "--out", out] + EVAL_FLAGS) == 2
    assert "--grid betta: unknown key" in capsys.readouterr().err


def test_grid_syntax():
    assert split_values('1, [32,64],"a,b",{"x": [1,2]}') == ["1", "[32,64]", '"a,b"', '{"x": [1,2]}']
    axes = parse_grid(["beta=1,4.5", "seed=0,1", "model.tc_estimator=mws,mss", "hidden=[8,16],[16,32]"])
    assert [(a.target, a.values) for a in axes] == [
        ("model.beta", [1, 4.5]), ("train.seed", [0, 1]), ("model.tc_estimator", ["mws", "mss"]),
        ("model.hidden", [[8, 16], [16, 32]])]
    assert run_name({"beta": 4.5, "model.tc_estimator": "mss", "hidden": [8, 16]}) == "beta-4.5_tc_estimator-mss_hidden-8-16"
    for bad, message in [("beta", "expected KEY=VALUE"), ("beta=1,1", "repeated"), ("beta=1,,2", "empty value"),
                         ("nope.x=1", None)]:
        with pytest.raises(UserError, match=message):
            plan_runs(tiny_config("btcvae"), parse_grid([bad]), "out")
    with pytest.raises(UserError, match="model.beta is given twice"):
        parse_grid(["beta=1", "model.beta=2"])


def test_mean_and_sd_over_seeds():
    axes = parse_grid(["beta=1,4", "seed=0,1"])
    rows = [{"beta": 1, "seed": 0, "status": "ok", "mig": 0.1}, {"beta": 1, "seed": 1, "status": "ok", "mig": 0.3},
            {"beta": 4, "seed": 0, "status": "ok", "mig": 0.5}, {"beta": 4, "seed": 1, "status": "failed: x", "mig": None}]
    table = mean_over_seeds(rows, axes, ["mig"]).splitlines()
    assert table[0] == "| beta | seeds | mig |"
    assert table[2] == "| 1 | 2 | 0.2 ± 0.14 |"  # sd with n - 1
    assert table[3] == "| 4 | 1 | 0.5 |"         # the failed run is left out
    assert mean_over_seeds(rows, parse_grid(["beta=1,4"]), ["mig"]) is None


@pytest.mark.slow  # two fresh processes that import torch: ~35 s on the 2-core machine
def test_runs_in_their_own_processes_one_per_slot(tmp_path):
    """The --parallel-gpus machinery, with two CPU slots instead of two GPUs."""
    cfg = tiny_config("vae", steps=5, checkpoint_every=5, sample_every=5)
    plans = plan_runs(cfg, parse_grid(["seed=1,2"]), str(tmp_path))
    cpu = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    status = run_in_slots(plans, [cpu, cpu], EvalOptions(k=2, n_test=50, device="cpu"), overwrite=False,
                          log_dir=str(tmp_path / "logs"))
    assert status == {"seed-1": "ok", "seed-2": "ok"}, status
    for plan in plans:
        assert json.load(open(os.path.join(plan.path, "metrics.json")))["step"] == 5
        assert "trained, evaluated" in open(tmp_path / "logs" / f"{plan.name}.log").read()
