"""`python -m training sweep`: train and evaluate a grid of configs (training/sweep.py), then tabulate them."""
from __future__ import annotations

import argparse

from ..config import parse_assignment, set_fields
from ..runfolder import read_config
from ..sweep import EvalOptions, sweep
from .evaluate import add_scoring_arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Train and evaluate one run per point of a grid (e.g. β × seed), then write a "
                          "summary table of their scores (summary.csv, summary.md).")
    parser.add_argument("--config", required=True, metavar="JSON", help="RunConfig JSON that every run starts from")
    parser.add_argument("--grid", required=True, nargs="+", metavar="KEY=V1,V2",
                        help="grid axes, e.g. beta=1,4,6 seed=0,1 (keys: train flag names or SECTION.FIELD)")
    parser.add_argument("--out", required=True, metavar="DIR", help="sweep folder: one run folder per grid point")
    parser.add_argument("--parallel-gpus", action="store_true",
                        help="one run per GPU at a time (each in its own process), instead of one after another")
    parser.add_argument("--overwrite", action="store_true", help="train every run again, even finished ones")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="set a config field for every run (VALUE is JSON)")
    parser.add_argument("--device", help="training device for every run (auto, cpu, cuda, mps)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    g = parser.add_argument_group("evaluation (see `python -m training evaluate --help`)")
    add_scoring_arguments(g)
    g.add_argument("--eval-seed", type=int, default=0)
    g.add_argument("--eval-device", default="auto", help="device for evaluation (default: auto)")


def run(args: argparse.Namespace) -> int:
    base = read_config(args.config)
    set_fields(base, [parse_assignment(text) for text in args.set])
    if args.device:
        base.train.device = args.device
    options = EvalOptions(k=args.k, n_test=args.n_test, disentanglement=args.disentanglement,
                          metric_scale=args.metric_scale, seed=args.eval_seed, device=args.eval_device)
    rows = sweep(base, args.grid, args.out, options, parallel_gpus=args.parallel_gpus, overwrite=args.overwrite,
                 progress=not args.quiet, config_source=args.config)
    return 0 if all(row["status"] == "ok" for row in rows) else 1
