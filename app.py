"""Start the VAE Latent Explorer.

    python app.py                      # runs in assets/ and ./runs
    python app.py --runs runs/ other/  # other folders (each a run folder or a folder of runs)
    python app.py --host 0.0.0.0 --port 7860 --share no
    python app.py --lesson my_lesson.md    # another lesson in the Lesson tab (format: explorer/lessons/)

On Hugging Face Spaces this file is the entry point (README front matter: app_file: app.py).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile


def _writable_caches() -> None:
    """numba (via umap) and matplotlib want a writable cache folder; no writable home is guaranteed
    (Spaces, containers), so point them at a temp folder unless the user chose one."""
    base = os.path.join(tempfile.gettempdir(), "vae-explorer-cache")
    os.makedirs(base, exist_ok=True)
    for var, sub in (("NUMBA_CACHE_DIR", "numba"), ("MPLCONFIGDIR", "matplotlib"),
                     ("TORCHINDUCTOR_CACHE_DIR", "torchinductor"), ("XDG_CACHE_HOME", "xdg")):
        os.environ.setdefault(var, os.path.join(base, sub))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _torch_threads() -> int:
    """One torch thread per request on small machines: the app serves many users at once, and
    requests running side by side (see the concurrency groups in explorer/ui.py) use the cores better
    than one request using all of them. Override with VAE_EXPLORER_THREADS."""
    import torch

    wanted = os.environ.get("VAE_EXPLORER_THREADS")
    cores = os.cpu_count() or 1
    threads = int(wanted) if wanted and wanted.isdigit() and int(wanted) > 0 else max(1, cores // 4)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (torch allows it once per process)
        pass
    return threads


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Explore the latent spaces of trained VAE runs in the browser.")
    p.add_argument("--runs", nargs="+", metavar="DIR", default=None,
                   help="run folders, or folders holding run folders (default: assets/ and ./runs)")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to listen on (0.0.0.0 to serve the local network; default 127.0.0.1)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    p.add_argument("--lesson", metavar="FILE", default=None,
                   help="the lesson file of the Lesson tab (default: explorer/lessons/vae_lesson.md)")
    p.add_argument("--share", choices=["yes", "no"], default="no",
                   help="also open a temporary public gradio.live link (default no)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    _writable_caches()
    _torch_threads()
    from explorer.lesson_file import LessonError, load_lesson
    from explorer.limits import quiet_refusals
    from explorer.ui import build_app, launch_options

    for folder in args.runs or []:
        if not os.path.isdir(folder):
            print(f"error: --runs {folder}: no such folder", file=sys.stderr)
            return 2
    try:
        lesson = load_lesson(args.lesson)
    except LessonError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    demo = build_app(args.runs, lesson=lesson)
    quiet_refusals()
    # SIGTERM (a Space restarting, a supervisor stopping the app) closes the server the way Ctrl-C does, so
    # the app's temp folders are removed at exit.
    signal.signal(signal.SIGTERM, _interrupt)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share == "yes", **launch_options(demo))
    return 0


if __name__ == "__main__":
    sys.exit(main())
