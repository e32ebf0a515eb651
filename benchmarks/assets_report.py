"""Numbers of the bundled runs, as the markdown tables of assets/README.md.

    python benchmarks/assets_report.py [assets]          # markdown: one metrics table per run + sizes
    python benchmarks/assets_report.py assets --json     # the same numbers as JSON

Each run's table lists the headline values of its metrics.json by their JSON path (`disentanglement.mig`),
floats to 4 decimals. tests/test_assets.py parses the tables of assets/README.md with `parse_card` below
and checks them against the metrics.json files, so the card cannot drift from the shipped numbers:
regenerate the tables with this script whenever a run is rebuilt.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys

# Headline metrics, in card order; absent or null values are left out.
CARD_KEYS = [
    "step", "n_test", "elbo", "recon", "kl", "iw_nll", "iw_k", "bits_per_dim", "mse", "psnr", "active_units",
    "vq.perplexity", "vq.codes_used", "prior_bits_per_code",
    "disentanglement.mig", "disentanglement.factorvae", "disentanglement.betavae",
    "disentanglement.dci.disentanglement", "disentanglement.dci.completeness",
    "disentanglement.dci.informativeness", "disentanglement.dci.informativeness_test",
]
ROW = re.compile(r"^\|\s*`([A-Za-z0-9_.]+)`\s*\|\s*([^|]+?)\s*\|")
HEADING = re.compile(r"^#{2,4}\s+`?([A-Za-z0-9_-]+)`?\s*$")
MB = 1024 * 1024


def dig(d, path: str):
    for key in path.split("."):
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def format_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    return f"{value:.4f}"


def card_rows(metrics: dict) -> list[tuple[str, str]]:
    rows = []
    for key in CARD_KEYS:
        value = dig(metrics, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        rows.append((key, format_value(value)))
    return rows


def run_folders(root: str) -> list[str]:
    return sorted(name for name in os.listdir(root)
                  if os.path.isfile(os.path.join(root, name, "config.json")))


def training_summary(run_dir: str) -> dict:
    """Steps, wall time and throughput from metrics.jsonl (the trainer's log)."""
    lines = []
    path = os.path.join(run_dir, "metrics.jsonl")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f if line.strip()]
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
        metrics_path = os.path.join(run_dir, "metrics.json")
        metrics = None
        if os.path.isfile(metrics_path):
            with open(metrics_path, encoding="utf-8") as f:
                metrics = json.load(f)
        prior = None
        if os.path.isfile(os.path.join(run_dir, "prior.json")):
            with open(os.path.join(run_dir, "prior.json"), encoding="utf-8") as f:
                prior = json.load(f)
        out[name] = {"card": card_rows(metrics) if metrics else [],
                     "settings": dig(metrics, "disentanglement.settings") if metrics else None,
                     "versions": metrics.get("versions") if metrics else None,
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
