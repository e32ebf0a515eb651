"""The model card of a loaded run: what was trained on what, and how well it does."""
from __future__ import annotations

from typing import Any

# Scores shown on the card, in this order: (label, score name in training.runfolder.SCORE_PATHS, format).
CARD_SCORES = [
    ("ELBO (nats)", "elbo", "{:.2f}"),
    ("reconstruction (nats)", "recon", "{:.2f}"),
    ("KL (nats)", "kl", "{:.2f}"),
    ("IW NLL (nats)", "iw_nll", "{:.2f}"),
    ("bits/dim", "bits_per_dim", "{:.3f}"),
    ("MSE", "mse", "{:.4f}"),
    ("PSNR (dB)", "psnr", "{:.2f}"),
    ("active units", "active_units", "{}"),
    ("codebook perplexity", "perplexity", "{:.1f}"),
    ("codes used", "codes_used", "{:.0%}"),
    ("MIG", "mig", "{:.3f}"),
    ("FactorVAE score", "factorvae", "{:.3f}"),
    ("DCI disentanglement", "dci_disentanglement", "{:.3f}"),
    ("BetaVAE score", "betavae", "{:.3f}"),
]


def key_metrics(run) -> dict:
    """The headline scores of metrics.json that exist for this run (label -> formatted string)."""
    out = {}
    if run.metrics is None:
        return out
    for label, name, fmt in CARD_SCORES:
        value = run.metrics.score(name)
        if value is not None:
            out[label] = fmt.format(value)
    split = run.metrics.field("split")
    if out and split is not None:
        out["evaluated on"] = f"{split} split ({run.metrics.field('n_test') or '?'} images)"
    return out


def card(run) -> dict:
    """The card as a JSON-serialisable dict."""
    m = run.config.model
    out = {
        "name": run.name,
        "dataset": run.config.data.name,
        "image size": m.image_size,
        "channels": m.channels,
        "model": m.name,
        "arch": m.arch or getattr(run.model, "arch", None),
        "latent size": run.latent_dim,
        "latent shape": list(run.latent_shape),
        "likelihood": m.likelihood,
        "training steps": run.step,
        "finished": run.done,
        "batch size": run.config.train.batch_size,
        "exported points": run.n_points,
        "attributes": list(run.attributes.get("attributes", {})) if run.attributes else [],
        "samples": samples_note(m.name, run.has_prior),
    }
    if m.name in ("beta-vae", "btcvae"):
        out["beta"] = m.beta
    if m.name == "annealed-vae":
        out["capacity"] = f"gamma={m.gamma:g}, C_max={m.c_max:g}"
    if m.name == "vqvae":
        out["codebook"] = f"{m.num_codes} codes of dim {m.code_dim}"
    out["metrics"] = key_metrics(run)
    if run.problems:
        out["problems"] = list(run.problems)
    return out


def card_markdown(run) -> str:
    c = card(run)
    lines = [f"### {md(c['name'])}", "", "| | |", "|---|---|"]
    arch = f" ({c['arch']})" if c["arch"] else ""
    lines.append(f"| model | {md(c['model'])}{md(arch)} |")
    lines.append(f"| dataset | {md(c['dataset'])}, {c['image size']}×{c['image size']}×{c['channels']} |")
    shape = "×".join(str(s) for s in c["latent shape"])
    lines.append(f"| latent | {c['latent size']}" + (f" ({shape})" if len(c["latent shape"]) > 1 else "") + " |")
    lines.append(f"| likelihood | {md(c['likelihood'])} |")
    for key in ("beta", "capacity", "codebook"):
        if key in c:
            lines.append(f"| {key} | {md(str(c[key]))} |")
    steps = "?" if c["training steps"] is None else f"{c['training steps']:,}"
    lines.append(f"| training steps | {steps}" + ("" if c["finished"] else " (not finished)") + " |")
    lines.append(f"| exported points | {c['exported points']:,} |" if run.latents is not None
                 else "| exported points | not exported (run `python -m training export`) |")
    lines.append(f"| samples | {md(c['samples'])} |")
    if c["attributes"]:
        lines.append(f"| attributes | {md(', '.join(c['attributes']))} |")
    for label, value in c["metrics"].items():
        lines.append(f"| {md(label)} | {md(value)} |")
    if not c["metrics"]:
        lines.append("| metrics | not evaluated (run `python -m training evaluate`) |")
    for problem in c.get("problems", []):
        lines.append(f"| note | {md(problem)} |")
    return "\n".join(lines) + "\n"


def samples_note(model_name: str, has_prior: bool) -> str:
    if model_name == "ae":
        return "N(0, I) draws (an autoencoder has no prior: expect poor samples)"
    if model_name == "vqvae":
        return "from the PixelCNN prior" if has_prior else "no (VQ-VAE without a trained prior)"
    return "N(0, I) prior" if has_prior else "no"


def md(text: Any) -> str:
    """Escape a value for a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")
