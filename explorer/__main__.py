"""`python -m explorer COMMAND ...`: the explorer's commands (the app itself starts with `python app.py`).

    python -m explorer site RUN [RUN ...] --out DIR [--max-points 10000] [--title TEXT]

A `UserError` becomes `error: <message>` on stderr and exit code 2, with no traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from training.errors import UserError

from .site import MAX_POINTS, build_site, site_files

EXIT_USER_ERROR = 2


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m explorer", description="Commands of the VAE latent explorer.")
    commands = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    site = commands.add_parser(
        "site", help="write a static site of runs (decodes in the browser; any static host serves it)",
        description="Write a static site of runs into a new folder: the latent map, interpolation, attribute "
                    "arithmetic, per-dimension sliders and prior samples, decoded in the browser with each "
                    "run's decoder.onnx. Serve it with `python -m http.server -d DIR` or push it as a static "
                    "Hugging Face Space.")
    site.add_argument("runs", nargs="+", metavar="RUN",
                      help="run folders (or names of runs in assets/ or runs/) with latents.npz and decoder.onnx")
    site.add_argument("--out", required=True, metavar="DIR", help="the site's folder (new, or empty)")
    site.add_argument("--max-points", type=int, default=MAX_POINTS,
                      help=f"points per run on the map, the first ones of its latent table (default {MAX_POINTS})")
    site.add_argument("--title", default="VAE latent explorer", help="the page's and the Space's title")
    return top


def run_site(args: argparse.Namespace) -> int:
    runs = build_site(args.runs, args.out, max_points=args.max_points, title=args.title, log=print)
    sizes = site_files(args.out)
    print(f"wrote {args.out}: {len(sizes)} files, {sum(sizes.values()):,} bytes "
          f"(largest {max(sizes.values()):,}); serve it with: python -m http.server -d {args.out}")
    return 0 if runs else EXIT_USER_ERROR


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run_site(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:
        # A full disk or a folder we may not write to: one line too (the temporary folder is already gone).
        where = f" {e.filename}" if e.filename else ""
        print(f"error: cannot write{where}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
