"""`python -m training train-prior RUN`: fit a PixelCNN prior over a VQ-VAE's code grid."""
from __future__ import annotations

import argparse
import os

from ..device import DEVICE_HELP
from ..prior import train_prior
from ..runfolder import PRIOR_WEIGHTS_FILE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="VQ-VAE run folder")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--layers", type=int, default=8, help="gated layers (receptive field grows by 1 per layer)")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--kernel-size", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=50_000, help="training images whose codes are used")
    parser.add_argument("--n-test", type=int, default=2_000, help="test images for the held-out bits per code")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)


def run(args: argparse.Namespace) -> int:
    summary = train_prior(args.run, steps=args.steps, batch_size=args.batch_size, lr=args.lr, layers=args.layers,
                          channels=args.channels, kernel_size=args.kernel_size, n_train=args.n_train,
                          n_test=args.n_test, seed=args.seed, device=args.device)
    print(f"prior: {summary['bits_per_code']:.3f} bits/code on {summary['train']['n_test_codes']} held-out grids "
          f"(uniform: {summary['uniform_bits_per_code']:.3f}); wrote {os.path.join(args.run, PRIOR_WEIGHTS_FILE)}")
    return 0
