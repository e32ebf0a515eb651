"""Numbers of the bundled runs, as the markdown tables of assets/README.md.

    python benchmarks/assets_report.py [assets]          # markdown: one metrics table per run + sizes
    python benchmarks/assets_report.py assets --json     # the same numbers as JSON

Each run's table lists the headline values of its metrics.json (read through training.runfolder.Metrics)
by their JSON path (`disentanglement.mig`), floats to 4 decimals. tests/test_assets.py parses the tables of assets/README.md with `parse_card` below
and checks them against the metrics.json files, so the card cannot drift from the shipped numbers:
regenerate the tables with this script whenever a run is rebuilt.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

from training.errors import UserError  # noqa: E402
from training.runfolder import (CONFIG_FILE, PRIOR_JSON_FILE, SCORE_PATHS, Metrics,  # noqa: E402
                                read_json_object, read_log, read_metrics)

# Headline entries of metrics.json, in card order; absent or null values are left out.
CARD_FIELDS = ("step", "n_test")
CARD_SCORES = ("n_train", "binarize_seed", "elbo", "recon", "kl", "iw_nll", "iw_k", "bits_per_dim", "mse", "psnr",
               "active_units", "shape_iou_square", "shape_iou_ellipse", "shape_iou_heart", "shape_iou_worst",
               "sample_confident_share", "sample_classifier_accuracy",
               "perplexity", "codes_used", "prior_bits_per_code", "mig", "factorvae", "mig_seed_mean",
               "factorvae_seed_mean", "betavae",
               "dci_disentanglement", "dci_completeness", "dci_informativeness", "dci_informativeness_test")
# A card row is named by the score's JSON path, so a reader can find it in metrics.json.
SCORE_OF_PATH = {".".join(SCORE_PATHS[name]): name for name in CARD_SCORES}
CARD_KEYS = list(CARD_FIELDS) + list(SCORE_OF_PATH)
ROW = re.compile(r"^\|\s*`([A-Za-z0-9_.]+)`\s*\|\s*([^|]+?)\s*\|")
HEADING = re.compile(r"^#{2,4}\s+`?([A-Za-z0-9_-]+)`?\s*$")
MB = 1024 * 1024


def card_value(metrics: Metrics, key: str):
    """The number a card row `key` shows, or None where the run has none."""
    if key in CARD_FIELDS:
        value = metrics.field(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    return metrics.score(SCORE_OF_PATH[key])


def format_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}"


def card_rows(metrics: Metrics) -> list[tuple[str, str]]:
    values = [(key, card_value(metrics, key)) for key in CARD_KEYS]
    return [(key, format_value(value)) for key, value in values if value is not None]


def run_folders(root: str) -> list[str]:
    return sorted(name for name in os.listdir(root)
                  if os.path.isfile(os.path.join(root, name, CONFIG_FILE)))


def training_summary(run_dir: str) -> dict:
    """Steps, wall time and throughput from metrics.jsonl (the trainer's log)."""
    lines = read_log(run_dir)
    if not lines:
        return {}
    last = lines[-1]
    speeds = [entry["images_per_s"] for entry in lines if isinstance(entry.get("images_per_s"), (int, float))]
    return {"steps": last.get("step"), "seconds": last.get("time"),
            "median_images_per_s": sorted(speeds)[len(speeds) // 2] if speeds else None,
            "final_loss": last.get("loss")}


def folder_sizes(run_dir: str) -> dict:
    return {name: os.path.getsize(os.path.join(run_dir, name)) for name in sorted(os.listdir(run_dir))
            if os.path.isfile(os.path.join(run_dir, name))}


def report(root: str) -> dict:
    out = {}
    for name in run_folders(root):
        run_dir = os.path.join(root, name)
        try:
            metrics = read_metrics(run_dir)
        except UserError:
            metrics = None
        prior_path = os.path.join(run_dir, PRIOR_JSON_FILE)
        prior = read_json_object(prior_path) if os.path.isfile(prior_path) else None
        out[name] = {"card": card_rows(metrics) if metrics else [],
                     "settings": (metrics.disentanglement or {}).get("settings") if metrics else None,
                     "versions": metrics.field("versions") if metrics else None,
                     "training": training_summary(run_dir),
                     "prior": {k: prior.get(k) for k in ("bits_per_code", "uniform_bits_per_code",
                                                         "marginal_bits_per_code")} if prior else None,
                     "sizes": folder_sizes(run_dir)}
    return out


def markdown(doc: dict) -> str:
    parts, total = [], 0
    for name, r in doc.items():
        size = sum(r["sizes"].values())
        total += size
        parts.append(f"### {name}\n")
        t = r["training"]
        if t:
            parts.append(f"Trained {t['steps']} steps in {t['seconds'] / 60:.1f} min "
                         f"(median {t['median_images_per_s']} images/s); folder {size / MB:.2f} MB, "
                         f"largest file {max(r['sizes'].values()) / MB:.2f} MB.\n")
        parts.append("| metric (metrics.json path) | value |\n|---|---|")
        parts.extend(f"| `{k}` | {v} |" for k, v in r["card"])
        if r["prior"]:
            parts.append("\nPixelCNN prior (prior.json): " + ", ".join(
                f"{k} {v:.3f}" for k, v in r["prior"].items() if isinstance(v, (int, float))))
        parts.append("")
    parts.append(f"All assets: {total / MB:.2f} MB.")
    return "\n".join(parts)


def parse_card(text: str) -> dict:
    """{run name: {metrics.json path: value string}} from the `### name` sections of a model card."""
    cards, current = {}, None
    for line in text.splitlines():
        if line.startswith("#"):
            # Any heading ends a run's section; only `### run-name` headings start one.
            heading = HEADING.match(line.strip())
            current = heading.group(1) if heading else None
            continue
        row = ROW.match(line.strip())
        if row and current is not None:
            cards.setdefault(current, {})[row.group(1)] = row.group(2)
    return cards


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", nargs="?", default="assets")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    doc = report(args.root)
    print(json.dumps(doc, indent=2) if args.json else markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
