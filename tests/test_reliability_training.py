"""Training under faults: SIGKILL at random moments (including in the middle of a checkpoint write), a full
disk and a read-only output folder.

The kill test drives the real CLI (`python -m training train`) in a subprocess and kills it with SIGKILL,
the way a closed laptop lid, a pre-empted GPU or a batch-system time limit does: no handler runs. After every
kill the run folder must hold only complete files (checkpoint.pt readable with weights_only=True,
model.safetensors readable), `--resume` must continue from that checkpoint, and the run must end with
exactly the weights of a run that was never interrupted.

Disk full and read-only folders use real file systems (a 200 kB tmpfs, a read-only tmpfs): they need
`mount`, i.e. root in a container or a machine that allows it; elsewhere these tests skip and say why.
"""
from __future__ import annotations

import contextlib
import glob
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from helpers_trainer import python_m_training, tiny_cli_args  # noqa: E402

from training import cli  # noqa: E402
from training.runfolder import load_checkpoint, read_weights  # noqa: E402

STEPS = 40
CHECKPOINT_EVERY = 2
# A wider fully connected layer makes checkpoint.pt ~5 MB, so that its write (write + fsync + rename)
# takes long enough for the test to catch the temp file and kill the process in the middle of it.
KILL_ARGS = dict(checkpoint_every=CHECKPOINT_EVERY, sample_every=1000, log_every=2)


def kill_cli_args(out: str) -> list:
    return tiny_cli_args(out, steps=STEPS, **KILL_ARGS) + ["--set", "model.fc_dim=256"]


# ---- helpers ----------------------------------------------------------------------------------------------
def temp_files(out: str) -> list:
    return glob.glob(os.path.join(glob.escape(out), "*.tmp-*"))


def checkpoint_step(out: str):
    """The step of the complete checkpoint in `out` (None when there is none yet). Raises if it is torn."""
    path = os.path.join(out, "checkpoint.pt")
    if not os.path.exists(path):
        return None
    return int(load_checkpoint(path)["step"])


def wait_until(predicate, process: subprocess.Popen, timeout: float, poll: float = 0.001) -> bool:
    """Poll `predicate` until it holds (True) or the process exits / the time runs out (False)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if predicate():
            return True
        if process.poll() is not None:
            return bool(predicate())
        time.sleep(poll)
    return False


def sigkill(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)


def start(out: str) -> subprocess.Popen:
    args = kill_cli_args(out)
    if os.path.exists(os.path.join(out, "checkpoint.pt")):
        args.append("--resume")
    return python_m_training(args)


def final_weights(out: str) -> dict:
    tensors, step = read_weights(os.path.join(out, "model.safetensors"))
    assert step == STEPS
    return tensors


# ---- SIGKILL at random moments ------------------------------------------------------------------------------
def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_weights(tmp_path):
    reference = str(tmp_path / "reference")
    done = python_m_training(kill_cli_args(reference))
    _, err = done.communicate(timeout=300)
    assert done.returncode == 0, err

    out = str(tmp_path / "killed")
    rng = random.Random(2026)
    # Alternate the two kinds of kill: in the middle of a checkpoint write (as soon as its temp file
    # exists), and a seeded random moment after training has started (mid-step, mid-log, mid-write).
    plan = ["during-checkpoint-write", "random", "during-checkpoint-write", "random", "during-checkpoint-write"]
    history = []
    for kind in plan:
        before = checkpoint_step(out)
        process = start(out)
        if kind == "during-checkpoint-write":
            # Wait for a checkpoint write of a step later than the one resumed from.
            def writing_new():
                return bool(glob.glob(os.path.join(glob.escape(out), "checkpoint.pt.tmp-*")))
            # A resumed run clears stale temp files before it writes its own: wait for that first.
            if before is not None:
                wait_until(lambda: not temp_files(out), process, 60)
            caught = wait_until(writing_new, process, 120)
        else:
            started = wait_until(lambda: checkpoint_step_safe(out) not in (None, before), process, 120)
            assert started, "the run never got past its first checkpoint"
            time.sleep(rng.uniform(0.0, 0.4))
            caught = None
        sigkill(process)
        if process.returncode == 0:
            break  # finished before the kill landed: nothing left to resume
        assert process.returncode == -signal.SIGKILL
        torn = temp_files(out)
        after = checkpoint_step(out)  # load_checkpoint raises on a torn file: it must never be one
        if after is not None:
            read_weights(os.path.join(out, "model.safetensors"))  # complete as well
            assert after % CHECKPOINT_EVERY == 0 and after >= (before or 0)
        history.append(dict(kind=kind, caught_write=caught, temp_files_left=len(torn), resumed_from=before,
                            checkpoint_after_kill=after))
    # Resume until done.
    process = start(out)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert not temp_files(out), "a resumed run must clear the temp files of the killed writes"

    print("kill history:", history)
    assert any(h["kind"] == "during-checkpoint-write" and h["temp_files_left"] for h in history), \
        f"no kill landed inside a checkpoint write: {history}"
    reference_weights, resumed_weights = final_weights(reference), final_weights(out)
    assert reference_weights.keys() == resumed_weights.keys()
    for name, tensor in reference_weights.items():
        assert torch.equal(tensor, resumed_weights[name]), f"{name} differs from the uninterrupted run"
    # One history in the metrics log: each logged step once, in order.
    import json
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
        steps = [json.loads(line)["step"] for line in f]
    assert steps == list(range(KILL_ARGS["log_every"], STEPS + 1, KILL_ARGS["log_every"]))


def checkpoint_step_safe(out: str):
    """checkpoint_step, but a checkpoint being renamed in place between the check and the read counts as
    'not yet'."""
    try:
        return checkpoint_step(out)
    except Exception:
        return None


# ---- disk full, read-only folder ------------------------------------------------------------------------------
@contextlib.contextmanager
def tmpfs(size: str, read_only: bool = False):
    """A real tmpfs of `size` (read-only when asked); skips the test where mount is not allowed."""
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small or read-only file system here")
    where = tempfile.mkdtemp(prefix="vae-reliability-")
    options = f"size={size}" + (",ro" if read_only else "")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", where], capture_output=True, text=True)
    if result.returncode != 0:
        os.rmdir(where)
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or 'not root'}): "
                    "disk-full / read-only checks need a real small or read-only file system")
    try:
        yield where
    finally:
        subprocess.run(["umount", where], capture_output=True)
        os.rmdir(where)


def run_cli(argv: list, capsys) -> tuple[int, str]:
    """`python -m training` in this process (no interpreter start-up): exit code and stderr. An exception
    escaping main() is what the user would see as a traceback."""
    from helpers_app import torch_threads

    with torch_threads(1):
        code = cli.main(argv)
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *words: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert any(w.lower() in lines[0].lower() for w in words), err


def test_disk_full_gives_a_one_line_error_and_keeps_no_torn_file(capsys):
    # 200 kB holds config.json, the log and the sample grids but not the first checkpoint (~300 kB).
    with tmpfs("200k") as disk:
        out = os.path.join(disk, "run")
        argv = tiny_cli_args(out, steps=10, checkpoint_every=10) + ["--set", "model.fc_dim=256"]
        try:
            code, err = run_cli(argv, capsys)
        except OSError as e:
            pytest.fail(f"disk full escaped as a traceback ({type(e).__name__}: {e}); the CLI must say "
                        f"'error: ...' and exit 2")
        assert_one_line_error(code, err, "no space", "disk", "full")
        assert not temp_files(out), f"a failed write left its temp file behind: {temp_files(out)}"
        assert not os.path.exists(os.path.join(out, "model.safetensors"))


def test_read_only_output_folder_gives_a_one_line_error(capsys):
    with tmpfs("1m", read_only=True) as folder:
        for out in (folder, os.path.join(folder, "new-run")):  # the folder itself, a new folder inside it
            try:
                code, err = run_cli(tiny_cli_args(out, steps=2), capsys)
            except OSError as e:
                pytest.fail(f"read-only folder escaped as a traceback ({type(e).__name__}: {e}); the CLI "
                            f"must say 'error: ...' and exit 2")
            assert_one_line_error(code, err, "read-only", "cannot write", "permission")
        assert os.listdir(folder) == []


def test_output_under_proc_gives_a_one_line_error(capsys):
    # /proc is read-only for everyone, root included: the same check on machines without mount.
    try:
        code, err = run_cli(tiny_cli_args("/proc/vae-run", steps=2), capsys)
    except OSError as e:
        pytest.fail(f"an unwritable --out escaped as a traceback ({type(e).__name__}: {e})")
    assert_one_line_error(code, err, "/proc/vae-run")
    assert not os.path.exists("/proc/vae-run")
