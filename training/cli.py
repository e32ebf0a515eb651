"""`python -m training <command> ...`: one entry point, one module per command.

Each command module defines `add_arguments(parser)` and `run(args) -> int` and is imported only when
its command runs, so a command whose module is missing (or slow to import) never affects the others.
A `UserError` becomes `error: <message>` on stderr and exit code 2, with no traceback.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import warnings
from typing import Optional, Sequence

from .errors import UserError

COMMANDS = {
    "train": "training.commands.train",
    "evaluate": "training.commands.evaluate",
    "export": "training.commands.export",
    "train-prior": "training.commands.train_prior",
    "sweep": "training.commands.sweep",
}

COMMAND_HELP = {
    "train": "train a model into a run folder (or continue one with --resume)",
    "evaluate": "score a run on its test split (ELBO, IW-NLL, disentanglement) into metrics.json",
    "export": "write latents.npz (latents + 2-D UMAP map), attributes.json and decoder.onnx for the explorer",
    "train-prior": "fit a PixelCNN prior over a VQ-VAE's code grid (prior.safetensors)",
    "sweep": "train and evaluate a grid of configs",
}

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train, evaluate and export VAE-family models as run folders for the explorer.",
        epilog="commands:\n" + "\n".join(f"  {name:<12} {text}" for name, text in COMMAND_HELP.items())
        + "\n\n`python -m training COMMAND --help` lists a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help=", ".join(COMMANDS))
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except SystemExit as e:  # argparse: --help (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else EXIT_USER_ERROR)


WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


def _dispatch(argv: list) -> int:
    top = top_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else EXIT_USER_ERROR
    command = top.parse_args(argv[:1]).command
    module_name = COMMANDS[command]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise  # a dependency of the module is missing: a real import problem, show it
        print(f"error: the '{command}' command is not available in this checkout ({module_name} is missing)",
              file=sys.stderr)
        return EXIT_USER_ERROR
    parser = argparse.ArgumentParser(prog=f"python -m training {command}", description=COMMAND_HELP[command])
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    try:
        with warnings.catch_warnings():
            # A warning is one line for the person at the keyboard, not the source line that raised it.
            warnings.showwarning = _show_warning
            return int(module.run(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:
        # A write the command did not wrap itself (disk full, read-only or foreign folder): still one
        # line. Other OSErrors are bugs or broken installs: show them.
        if e.errno not in WRITE_ERRNOS:
            raise
        where = f" {e.filename}" if e.filename else ""
        print(f"error: cannot write{where}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"\n{interrupted_message(command, getattr(args, 'out', None))}", file=sys.stderr)
        return EXIT_INTERRUPTED


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {' '.join(str(message).split())}", file=file or sys.stderr)


def interrupted_message(command: str, out: Optional[str]) -> str:
    # Checkpoints are written atomically, so whatever checkpoint.pt holds is complete.
    if command == "train" and out and os.path.isfile(os.path.join(out, "checkpoint.pt")):
        return (f"interrupted: the last checkpoint in {out} is intact; continue with: "
                f"python -m training train --out {out} --resume")
    return "interrupted" + (": no checkpoint had been written yet" if command == "train" else "")
