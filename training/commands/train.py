"""`python -m training train`: train a model into a run folder, or continue one with --resume."""
from __future__ import annotations

import argparse
import os

from .. import distributed
from ..config import FLAG_FIELDS, RunConfig, parse_assignment, set_fields
from ..device import DEVICE_HELP
from ..errors import UserError
from ..runfolder import CONFIG_FILE, read_config
from ..trainer import train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = ("Train a model into a run folder. Start from --config (a RunConfig JSON, e.g. "
                          "training/configs/dsprites_btcvae.json) or from --model and --dataset; flags override "
                          "the config's values.")
    parser.add_argument("--out", required=True, metavar="DIR", help="run folder to write, e.g. runs/dsprites-vae")
    parser.add_argument("--config", metavar="JSON", help="RunConfig JSON to start from")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its checkpoint (its config.json is the default config)")
    parser.add_argument("--overwrite", action="store_true", help="replace the run that --out already holds")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", help="dsprites, smileys, mnist, fashion-mnist, celeba or folder:PATH")
    g.add_argument("--data-dir", help="where torchvision datasets / image folders live")
    g.add_argument("--image-size", type=int, help="resize images to this size (default: the dataset's own)")
    g.add_argument("--subset", type=int, help="use only the first N training examples")
    g = parser.add_argument_group("model")
    g.add_argument("--model", help="ae, vae, vae-mlp, resvae, beta-vae, annealed-vae, btcvae or vqvae")
    g.add_argument("--arch", help="encoder/decoder family: mlp, conv or resnet")
    g.add_argument("--latent-dim", type=int)
    g.add_argument("--hidden", type=int, nargs="+", metavar="N", help="conv channels per stage / MLP widths")
    g.add_argument("--likelihood", choices=["bernoulli", "gaussian"])
    g.add_argument("--beta", type=float, help="KL weight (β-VAE) or total-correlation weight (β-TCVAE)")
    g = parser.add_argument_group("training")
    g.add_argument("--steps", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--seed", type=int)
    g.add_argument("--grad-clip", type=float, help="max gradient norm (0 disables clipping)")
    g.add_argument("--device", help=DEVICE_HELP)
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision on CUDA (default on)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None)
    g.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the training step (faster steps after a compile of tens of seconds)")
    g.add_argument("--log-every", type=int)
    g.add_argument("--sample-every", type=int)
    g.add_argument("--checkpoint-every", type=int)
    g.add_argument("--snapshots", type=int, metavar="N",
                   help="save float16 weight snapshots at about N log-spaced steps (snapshots/), for the "
                        "explorer's Training tab after export (default 0: none)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="set any config field, e.g. --set model.fc_dim=128 --set train.betas=[0.5,0.999] "
                             "(VALUE is JSON; plain words are strings)")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """--config (or, with --resume, the run's own config.json), then flags, then --set."""
    saved = os.path.join(args.out, CONFIG_FILE)
    if args.resume and not args.config and not os.path.isfile(saved):
        if not os.path.isdir(args.out):
            raise UserError(f"{args.out}: no such run folder (nothing to resume)")
        if args.model is None or args.dataset is None:
            raise UserError(f"{args.out}: nothing to resume (no {CONFIG_FILE}); start the run without --resume")
    if args.config:
        cfg = read_config(args.config)
    elif args.resume and os.path.isfile(saved):
        cfg = read_config(saved)
    elif args.model is None or args.dataset is None:
        raise UserError("give --model and --dataset, or --config (see training/configs/)")
    else:
        cfg = RunConfig()
    assignments = []
    for flag, target in FLAG_FIELDS.items():
        value = getattr(args, flag)
        if value is not None:
            if flag == "grad_clip" and value <= 0:
                value = None  # --grad-clip 0 switches clipping off
            assignments.append((target, value))
    assignments.extend(parse_assignment(text) for text in args.set)
    set_fields(cfg, assignments)
    return cfg


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    result = train(cfg, args.out, resume=args.resume, progress=not args.quiet, overwrite=args.overwrite)
    if distributed.launch_env()[0] == 0:  # under torchrun, rank 0 speaks for all
        print(f"trained {result.config.model.name} on {result.config.data.name} for {result.step} steps: {result.path}")
    return 0
