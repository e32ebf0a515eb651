"""`python -m training evaluate RUN [RUN ...]`: score runs into metrics.json and print them side by side."""
from __future__ import annotations

import argparse
import os

from ..device import DEVICE_HELP
from ..errors import UserError
from ..evaluate import column_names, evaluate_run, format_table
from ..runfolder import METRICS_FILE, read_metrics


def add_scoring_arguments(parser) -> None:
    """What to score: --k, --n-test, --(no-)disentanglement, --metric-scale (shared with `sweep`)."""
    parser.add_argument("--k", type=int, default=1000, help="importance samples for the IW-NLL (0: skip it)")
    parser.add_argument("--n-test", type=int, default=1000, help="test images for the held-out metrics")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--disentanglement", dest="disentanglement", action="store_true", default=None,
                       help="require the factor metrics (error for a dataset without ground-truth factors)")
    group.add_argument("--no-disentanglement", dest="disentanglement", action="store_false",
                       help="skip MIG / FactorVAE / DCI / BetaVAE")
    parser.add_argument("--metric-scale", type=float, default=1.0,
                        help="multiplies the protocol's sample counts (e.g. 0.1 for a quick look)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", metavar="RUN", nargs="+", help="run folder(s); several print one table")
    add_scoring_arguments(parser)
    parser.add_argument("--metrics", default=None, metavar="LIST",
                        help="comma-separated subset of mig,factorvae,dci,betavae (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="processes for DCI's per-factor classifiers")
    parser.add_argument("--sample-quality", action="store_true",
                        help="score 1,000 decoded N(0, I) draws with a digit classifier trained on the run's "
                             "training images (labelled datasets such as MNIST; about 2 CPU-minutes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra-seeds", default="", metavar="LIST",
                        help="comma-separated evaluation seeds with which MIG and FactorVAE are scored again; "
                             "metrics.json records each seed's value and the mean (e.g. 1,2)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu", help=DEVICE_HELP)
    parser.add_argument("--from-saved", action="store_true",
                        help="print the table from the runs' metrics.json without evaluating")


def run(args: argparse.Namespace) -> int:
    results = []
    for run_dir in args.runs:
        if args.from_saved:
            results.append(read_metrics(run_dir).doc)
        else:
            results.append(evaluate_run(run_dir, k=args.k, n_test=args.n_test, disentanglement=args.disentanglement,
                                        metric_scale=args.metric_scale, seed=args.seed, device=args.device,
                                        batch_size=args.batch_size, progress=True, metrics=args.metrics,
                                        jobs=args.jobs, sample_quality=args.sample_quality,
                                        extra_seeds=parse_seeds(args.extra_seeds)))
    print(format_table(results, column_names(args.runs)))
    for run_dir, result in zip(args.runs, results):
        for note in result.get("notes", []):
            print(f"note ({os.path.basename(os.path.normpath(run_dir))}): {note}")
    if not args.from_saved:
        print("wrote " + ", ".join(os.path.join(r, METRICS_FILE) for r in args.runs))
    return 0


def parse_seeds(text: str) -> list:
    """"1,2" -> [1, 2]; UserError for anything but non-negative integers."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not all(p.isdigit() for p in parts):
        raise UserError(f"--extra-seeds: expected comma-separated non-negative integers, got {text!r}")
    return [int(p) for p in parts]
