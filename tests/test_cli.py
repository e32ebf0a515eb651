"""`python -m training`: bad input exits 2 with one `error:` line and leaves no run folder that looks valid."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import time

from helpers_trainer import (REPO_ROOT, SHARED_DATA, looks_like_valid_run, python_m_training, tiny_cli_args,
                             tiny_config)
from training import cli
from training.config import RunConfig
from training.runfolder import load_checkpoint, load_run, read_config
from training.trainer import train


def folder_digest(path: str) -> dict:
    return {name: hashlib.sha256(open(os.path.join(path, name), "rb").read()).hexdigest()
            for name in sorted(os.listdir(path))}


def test_bad_input_exits_2_with_one_error_line(tmp_path):
    # An existing run, for the resume cases (each case gets its own copy of the folder).
    base = str(tmp_path / "base")
    train(tiny_config(steps=5, checkpoint_every=5), base, progress=False)

    def copy_of_base(name: str) -> str:
        import shutil
        path = str(tmp_path / name)
        shutil.copytree(base, path)
        return path

    corrupt = copy_of_base("corrupt")
    with open(os.path.join(corrupt, "checkpoint.pt"), "r+b") as f:  # truncated, as by a full disk
        f.truncate(300)
    mismatched = copy_of_base("mismatched")
    version_99 = str(tmp_path / "v99.json")
    data = RunConfig().to_dict()
    data["format_version"] = 99
    json.dump(data, open(version_99, "w"))
    not_json = str(tmp_path / "broken.json")
    open(not_json, "w").write('{"model": {"name": "vae",')
    empty_data_dir = str(tmp_path / "empty-data")
    os.makedirs(empty_data_dir)
    new = lambda name: str(tmp_path / "new" / name)  # noqa: E731  folders that must not appear

    # The cases the CLI must survive in a real process (each pays for a fresh `import torch`; more cases
    # run in-process below).
    cases = {
        "unknown model": (tiny_cli_args(new("m")) + ["--model", "vea"], "unknown model 'vea'", new("m")),
        "unknown dataset": (tiny_cli_args(new("d")) + ["--dataset", "mnits"], "mnits", new("d")),
        # download off: a test never fetches data, even on a machine with network access
        "missing dataset files": (tiny_cli_args(new("e")) + ["--data-dir", empty_data_dir, "--set",
                                  'data.options={"download": false}'], "mnist: no IDX files found", new("e")),
        "corrupt checkpoint": (tiny_cli_args(corrupt) + ["--resume"], "corrupt or unreadable checkpoint", None),
        "mismatched checkpoint": (tiny_cli_args(mismatched) + ["--resume", "--latent-dim", "7"],
                                  "model.latent_dim is 7 but the checkpoint has 4", None),
        "format version 99": (["train", "--config", version_99, "--out", new("v")], "format version 99", new("v")),
        "config not JSON": (["train", "--config", not_json, "--out", new("j")], "not valid JSON", new("j")),
    }
    digests = {path: folder_digest(path) for path in (corrupt, mismatched)}
    procs = {}
    for name, (args, _, _) in cases.items():
        procs[name] = python_m_training(args)
        if len(procs) % 2 == 0:  # two at a time on the two cores
            for p in procs.values():
                p.wait(timeout=120)
    for name, (args, expected, must_not_exist) in cases.items():
        out, err = procs[name].communicate(timeout=120)
        assert procs[name].returncode == 2, f"{name}: exit {procs[name].returncode}\n{err}"
        assert err.startswith("error: ") and err.count("\n") == 1, f"{name}: {err!r}"
        assert "Traceback" not in err and expected in err, f"{name}: {err!r}"
        if must_not_exist:
            assert not looks_like_valid_run(must_not_exist) and not os.path.exists(must_not_exist), name
    for path, digest in digests.items():
        assert folder_digest(path) == digest, f"{path} was modified"
    assert not os.path.exists(tmp_path / "new")


def test_more_bad_input_through_main(tmp_path, capsys):
    existing = str(tmp_path / "existing")
    train(tiny_config(steps=5, checkpoint_every=5), existing, progress=False)
    digest = folder_digest(existing)
    unknown_field = str(tmp_path / "unknown_field.json")
    json.dump({"model": {"latnet_dim": 3}}, open(unknown_field, "w"))
    new = lambda name: str(tmp_path / "new" / name)  # noqa: E731

    cases = {
        "unknown config field": (["train", "--config", unknown_field, "--out", new("u")], "latnet_dim"),
        "run already there": (tiny_cli_args(existing), "already holds a run"),
        "resume and overwrite": (tiny_cli_args(existing) + ["--resume", "--overwrite"], "contradict"),
        "resume without a run": (tiny_cli_args(new("r")) + ["--resume"], "nothing to resume"),
        "bad --set": (tiny_cli_args(new("s")) + ["--set", "model.latnet_dim=3"], "unknown config field"),
        "no model": (["train", "--dataset", "mnist", "--out", new("n")], "give --model and --dataset"),
        "unknown device": (tiny_cli_args(new("g")) + ["--device", "tpu9"], "device"),
        "cuda without cuda": (tiny_cli_args(new("c")) + ["--device", "cuda"], "device"),
        "bad model option": (tiny_cli_args(new("k")) + ["--set", "model.kernel_size=5"], "kernel_size"),
        "zero steps": (tiny_cli_args(new("z")) + ["--steps", "0"], "train.steps must be a positive integer"),
    }
    for name, (args, expected) in cases.items():
        if name == "cuda without cuda" and __import__("torch").cuda.is_available():
            continue
        code = cli.main(args)
        err = capsys.readouterr().err
        assert code == 2, f"{name}: exit {code}: {err}"
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, f"{name}: {err!r}"
    assert folder_digest(existing) == digest
    assert not os.path.exists(tmp_path / "new")


def test_argparse_errors_exit_2(capsys):
    assert cli.main(["train", "--out", "x", "--steps", "many"]) == 2
    assert "invalid int value" in capsys.readouterr().err
    assert cli.main(["no-such-command"]) == 2
    assert cli.main([]) == 2
    assert cli.main(["train", "--help"]) == 0
    assert "--resume" in capsys.readouterr().out


def test_a_command_whose_module_is_missing_does_not_break_the_others(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "ghost", "training.no_such_module_here")
    monkeypatch.setitem(cli.COMMAND_HELP, "ghost", "a command nobody wrote")
    assert cli.main(["ghost", "--x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the 'ghost' command is not available") and "Traceback" not in err
    assert cli.main(["train", "--help"]) == 0


def test_config_file_then_flags_then_set(tmp_path):
    out = str(tmp_path / "run")
    preset = os.path.join(REPO_ROOT, "training", "configs", "mnist_vae.json")
    args = ["--config", preset, "--data-dir", SHARED_DATA, "--subset", "200", "--steps", "4", "--batch-size", "8",
            "--hidden", "8", "16", "--latent-dim", "3", "--set", "model.fc_dim=16", "--set", "train.betas=[0.5,0.9]",
            "--grad-clip", "0", "--log-every", "2", "--device", "cpu", "--out", out, "--quiet"]
    assert cli.main(["train", *args]) == 0
    cfg = read_config(os.path.join(out, "config.json"))
    preset_cfg = read_config(preset)
    assert (cfg.train.steps, cfg.train.batch_size, cfg.model.hidden, cfg.model.latent_dim, cfg.model.fc_dim) == \
           (4, 8, [8, 16], 3, 16)
    assert cfg.train.betas == [0.5, 0.9] and cfg.train.grad_clip is None
    assert cfg.model.name == preset_cfg.model.name and cfg.train.lr == preset_cfg.train.lr  # from the preset
    assert load_run(out).step == 4

    # --resume with no --config reads the run's own config.json; --steps extends it.
    assert cli.main(["train", "--out", out, "--resume", "--steps", "6", "--quiet"]) == 0
    assert load_run(out).step == 6


def test_ctrl_c_exits_130_and_the_run_resumes(tmp_path):
    out = str(tmp_path / "run")
    proc = python_m_training(tiny_cli_args(out, steps=400, checkpoint_every=5))
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(out, "checkpoint.pt")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert not os.path.exists(os.path.join(out, "DONE")), "the run finished before the interrupt arrived"
    assert proc.returncode == 130, err
    assert err.strip().endswith(f"interrupted: the last checkpoint in {out} is intact; continue with: "
                                f"python -m training train --out {out} --resume")
    assert "Traceback" not in err
    at = load_checkpoint(os.path.join(out, "checkpoint.pt"))["step"]
    assert at % 5 == 0 and 0 < at < 400
    assert cli.main(["train", "--out", out, "--resume", "--steps", str(at + 5), "--quiet"]) == 0
    assert load_run(out).step == at + 5
