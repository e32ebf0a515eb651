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
# The rows the short card keeps of the full one, and its headline scores, best first (labels of CARD_SCORES).
SHORT_ROWS = ("model", "dataset", "latent", "samples")
HEADLINE_SCORES = ("MIG", "FactorVAE score", "IW NLL (nats)", "ELBO (nats)", "PSNR (dB)", "codebook perplexity")


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
        if m.warmup_steps > 0:
            out["warm-up"] = f"regulariser weight 0 → 1 over the first {m.warmup_steps:,} steps"
    if m.name == "annealed-vae":
        out["capacity"] = f"gamma={m.gamma:g}, C_max={m.c_max:g}"
    if m.name == "vqvae":
        out["codebook"] = f"{m.num_codes} codes of dim {m.code_dim}"
    out["metrics"] = key_metrics(run)
    if run.problems:
        out["problems"] = list(run.problems)
    return out


# The card's rows for the objective's own settings, in the order both cards (app and static site) show them.
OBJECTIVE_ROWS = ("beta", "warm-up", "capacity", "codebook")


def card_markdown(run) -> str:
    """The card as Markdown: the run's name and the rows that matter in class (model, dataset, latent size,
    samples, its headline scores, any problem), then every row folded in a 'Full model card' block."""
    c = card(run)
    rows = full_rows(run, c)
    short = [(key, value) for key, value in rows if key in SHORT_ROWS]
    short += [(md(label), md(c["metrics"][label])) for label in headline_scores(c["metrics"])]
    short += [(key, value) for key, value in rows if key in ("metrics", "note")]
    return (f"### {md(c['name'])}\n\n{table(short)}\n<details><summary>Full model card</summary>\n\n"
            f"{table(rows)}\n</details>\n")


def full_rows(run, c: dict) -> list[tuple[str, str]]:
    """Every row of the card, (label, Markdown-escaped value), in the order the full card shows them."""
    arch = f" ({c['arch']})" if c["arch"] else ""
    shape = "×".join(str(s) for s in c["latent shape"])
    steps = "?" if c["training steps"] is None else f"{c['training steps']:,}"
    rows = [("model", md(f"{c['model']}{arch}")),
            ("dataset", f"{md(c['dataset'])}, {c['image size']}×{c['image size']}×{c['channels']}"),
            ("latent", f"{c['latent size']}" + (f" ({shape})" if len(c["latent shape"]) > 1 else "")),
            ("likelihood", md(c["likelihood"]))]
    rows += [(key, md(str(c[key]))) for key in OBJECTIVE_ROWS if key in c]
    rows.append(("training steps", steps + ("" if c["finished"] else " (not finished)")))
    rows.append(("exported points", f"{c['exported points']:,}" if run.latents is not None
                 else "not exported (run `python -m training export`)"))
    rows.append(("samples", md(c["samples"])))
    if c["attributes"]:
        rows.append(("attributes", md(", ".join(c["attributes"]))))
    rows += [(md(label), md(value)) for label, value in c["metrics"].items()]
    if not c["metrics"]:
        rows.append(("metrics", "not evaluated (run `python -m training evaluate`)"))
    rows += [("note", md(problem)) for problem in c.get("problems", [])]
    return rows


def headline_scores(metrics: dict) -> list[str]:
    """The one or two scores a class compares runs by: disentanglement where it was scored, else the
    likelihood, else the reconstruction and the codebook's use."""
    return [label for label in HEADLINE_SCORES if label in metrics][:2]


def table(rows: list[tuple[str, str]]) -> str:
    return "\n".join(["| | |", "|---|---|", *(f"| {key} | {value} |" for key, value in rows)]) + "\n"


def samples_note(model_name: str, has_prior: bool) -> str:
    if model_name == "ae":
        return "N(0, I) draws (an autoencoder has no prior: expect poor samples)"
    if model_name == "vqvae":
        return "from the PixelCNN prior" if has_prior else "no (VQ-VAE without a trained prior)"
    return "N(0, I) prior" if has_prior else "no"


def md(text: Any) -> str:
    """Escape a value for a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")
