"""`python -m training export RUN`: write latents.npz (latents + 2-D UMAP map), attributes.json, decoder.onnx and,
for a run with weight snapshots, timeline.npz (`--decoder-only`: decoder.onnx alone; `--timeline-only`:
timeline.npz alone; `--decoder-weights float16`: the decoder's layer weights stored at half size)."""
from __future__ import annotations

import argparse
import os

from ..device import DEVICE_HELP, resolve_device
from ..encoding import SPLITS
from ..export import export_run
from ..onnx_decoder import DEFAULT_WEIGHT_STORAGE, WEIGHT_STORAGES
from ..runfolder import ATTRIBUTES_FILE, DECODER_FILE, LATENTS_FILE, TIMELINE_FILE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="run folder")
    parser.add_argument("--n", type=int, default=10_000, help="number of points to export")
    parser.add_argument("--split", choices=SPLITS, default="both",
                        help="both: the test split first, then training points if more are needed")
    parser.add_argument("--umap-neighbors", type=int, default=15)
    parser.add_argument("--umap-min-dist", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0,
                        help="choice of points and UMAP random_state (-1: unseeded UMAP, faster on many cores)")
    parser.add_argument("--thumb-size", type=int, default=64, help="largest thumbnail side in pixels")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--device", default="cpu", help=DEVICE_HELP)
    parser.add_argument("--decoder-only", action="store_true",
                        help=f"write only {DECODER_FILE} (no encoding, no map): for runs whose latents are exported")
    # Checked by export_run rather than by argparse `choices`, so that a bad value is one error line.
    parser.add_argument("--decoder-weights", default=DEFAULT_WEIGHT_STORAGE,
                        metavar="{" + ",".join(WEIGHT_STORAGES) + "}",
                        help=f"how {DECODER_FILE} stores its layer weights (also with --decoder-only): float32, or "
                             f"float16 for half the bytes, computed in float32 (docs/run-format.md)")
    parser.add_argument("--timeline-only", action="store_true",
                        help=f"write only {TIMELINE_FILE} from the run's weight snapshots (no map): over the points "
                             f"of {LATENTS_FILE} when the run has one")


def run(args: argparse.Namespace) -> int:
    if args.decoder_only:
        summary = export_run(args.run, decoder_only=True, decoder_weights=args.decoder_weights)
        print(f"exported the decoder ({summary['decoder_bytes'] / 1e6:.2f} MB, {args.decoder_weights} weights, "
              f"latent size {summary['latent_size']}) "
              f"in {summary['seconds']['total']:.1f} s -> {os.path.join(args.run, DECODER_FILE)}")
        return 0
    if args.timeline_only:
        summary = export_run(args.run, n=args.n, split=args.split, seed=args.seed, thumb_size=args.thumb_size,
                             device=str(resolve_device(args.device)), batch_size=args.batch_size, timeline_only=True)
        print(f"exported the timeline of {summary['snapshots']} snapshots ({summary['measured']} over "
              f"{summary['points']} test points) in {summary['seconds']['total']:.1f} s -> "
              f"{os.path.join(args.run, TIMELINE_FILE)}")
        return 0
    summary = export_run(args.run, n=args.n, split=args.split, umap_neighbors=args.umap_neighbors,
                         umap_min_dist=args.umap_min_dist, seed=args.seed, thumb_size=args.thumb_size,
                         device=str(resolve_device(args.device)), batch_size=args.batch_size, progress=True,
                         decoder_weights=args.decoder_weights)
    seconds = summary["seconds"]
    print(f"exported {summary['n']} points ({summary['n_test']} test, {summary['n_train']} train; latent size "
          f"{summary['latent_size']}) and {len(summary['attributes'])} attribute vectors in {seconds['total']:.1f} s "
          f"-> {os.path.join(args.run, LATENTS_FILE)}, {ATTRIBUTES_FILE}, {DECODER_FILE}"
          + (f", {TIMELINE_FILE} ({summary['snapshots']} snapshots)" if summary["snapshots"] else ""))
    return 0
