"""Small charts drawn with Pillow: KL per latent dimension, a VQ-VAE's codebook use, a posterior against the
prior.

Black on white with TEXT_PX text (at least 14 px on a projector); the page inverts them in its dark theme
(static/app.css), so one picture serves both themes.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from training.errors import UserError

# Categorical palette (Tableau 10, then its lighter partner colours): distinguishable, colour-blind aware.
PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
           "#9c755f", "#bab0ac", "#a0cbe8", "#ffbe7d", "#ff9d9a", "#86bcb6", "#8cd17d", "#f1ce63",
           "#d4a6c8", "#fabfd2", "#d7b5a6", "#79706e"]
TEXT_PX = 16              # text drawn into pictures and charts (at least 14 px on screen)


def text_font(size: int = TEXT_PX):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has no size argument
        return ImageFont.load_default()


KL_PLOT_LEFT, KL_PLOT_RIGHT = 60, 10   # the KL chart's plot area starts and ends this far from its edges


def kl_bar_figure(kl_per_dim, width: int = 560, height: int = 260) -> Image.Image:
    """Bar chart of the mean KL (nats) of each latent dimension. Dimensions above 0.01 nats (carrying
    information) are drawn in colour, collapsed ones in grey. Black on white with TEXT_PX text; the page
    inverts charts in its dark theme (app.css), so one picture serves both."""
    kl = np.asarray(kl_per_dim, dtype=np.float64).reshape(-1)
    if kl.size == 0 or not np.all(np.isfinite(kl)):
        raise UserError("KL per dimension must be a non-empty list of finite numbers")
    im = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(im)
    font = text_font(TEXT_PX)
    left, right, top, bottom = KL_PLOT_LEFT, KL_PLOT_RIGHT, TEXT_PX + 14, TEXT_PX + 10
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = max(float(kl.max()), 1e-6)
    draw.text((4, 2), "KL per dimension (nats)", fill="black", font=font)
    draw.line([(left, top), (left, top + plot_h), (left + plot_w, top + plot_h)], fill="black")
    draw.text((4, top - TEXT_PX // 2), f"{top_value:.3g}", fill="black", font=font)
    draw.text((4, top + plot_h - TEXT_PX), "0", fill="black", font=font)
    n = kl.size
    slot = plot_w / n
    for d, v in enumerate(kl):
        x0 = left + d * slot + slot * 0.15
        x1 = left + (d + 1) * slot - slot * 0.15
        bar_h = max(0.0, v) / top_value * plot_h
        colour = PALETTE[0] if v > 0.01 else "#bbbbbb"
        if x1 - x0 < 1:
            x1 = x0 + 1
        draw.rectangle([x0, top + plot_h - bar_h, x1, top + plot_h], fill=colour)
        label = str(d)
        tw = draw.textlength(label, font=font)
        every = max(1, math.ceil((tw + 6) / slot))  # as many labels as fit side by side
        if d % every == 0:
            draw.text((left + (d + 0.5) * slot - tw / 2, top + plot_h + 3), label, fill="black", font=font)
    return im


def codebook_use_figure(counts, perplexity: float, codes_used: float, width: int = 560,
                        height: int = 260) -> Image.Image:
    """Bar chart of a VQ-VAE's codebook use: the share (%) of code-grid positions each code takes, codes
    sorted from most to least used (unused codes leave an empty slot), with the perplexity and the number of
    codes used in the title. Drawn like kl_bar_figure (black on white, TEXT_PX text, inverted by the dark
    theme)."""
    c = np.asarray(counts, dtype=np.float64).reshape(-1)
    if c.size == 0 or not np.all(np.isfinite(c)) or np.any(c < 0):
        raise UserError("code counts must be a non-empty list of numbers >= 0")
    share = np.sort(c)[::-1] / max(float(c.sum()), 1.0) * 100.0
    im = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(im)
    font = text_font(TEXT_PX)
    # Room for the page's label above the value axis (it covers the chart's top-left corner).
    left, right, top, bottom = KL_PLOT_LEFT, KL_PLOT_RIGHT, 2 * TEXT_PX + 18, TEXT_PX + 10
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value = max(float(share.max()), 1e-6)
    used = int(round(codes_used * c.size))
    title = f"perplexity {perplexity:.1f}, {used} of {c.size} codes used"
    draw.text((width - right - draw.textlength(title, font=font), 2), title, fill="black", font=font)
    draw.line([(left, top), (left, top + plot_h), (left + plot_w, top + plot_h)], fill="black")
    draw.text((4, top - TEXT_PX // 2), f"{top_value:.3g}%", fill="black", font=font)
    draw.text((4, top + plot_h - TEXT_PX), "0", fill="black", font=font)
    slot = plot_w / c.size
    for rank, v in enumerate(share):
        if v <= 0:
            continue
        x0 = left + rank * slot + slot * 0.15
        x1 = max(left + (rank + 1) * slot - slot * 0.15, x0 + 1)
        draw.rectangle([x0, top + plot_h - v / top_value * plot_h, x1, top + plot_h], fill=PALETTE[0])
    axis_y = top + plot_h + 3
    draw.text((left, axis_y), "1", fill="black", font=font)
    last = str(c.size)
    draw.text((left + plot_w - draw.textlength(last, font=font), axis_y), last, fill="black", font=font)
    caption = "codes, most used first"
    draw.text((left + (plot_w - draw.textlength(caption, font=font)) / 2, axis_y), caption, fill="black", font=font)
    return im


def posterior_figure(mu, logvar, dims: Optional[Sequence[int]] = None, width: int = 420,
                     row_height: int = TEXT_PX + 8, span: float = 4.0) -> Image.Image:
    """Posterior of one image per latent dimension: mean (dot) ± 2σ (bar) against the prior's ±2
    band (grey) on an axis from −span to +span (values beyond are clipped, marked with an arrow)."""
    m = np.asarray(mu, dtype=np.float64).reshape(-1)
    lv = np.zeros_like(m) if logvar is None else np.asarray(logvar, dtype=np.float64).reshape(-1)
    if m.size == 0 or m.shape != lv.shape or not (np.all(np.isfinite(m)) and np.all(np.isfinite(lv))):
        raise UserError("mu and logvar must be finite vectors of the same length")
    order = list(range(m.size)) if dims is None else [int(d) for d in dims]
    if not order or min(order) < 0 or max(order) >= m.size:
        raise UserError(f"dims must be indices in 0..{m.size - 1}")
    order = order[:64]
    sigma = np.exp(0.5 * np.clip(lv, -30, 30))
    label_w, margin = 44, 10
    height = row_height * len(order) + TEXT_PX + 10
    im = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(im)
    font = text_font(TEXT_PX)
    x0, x1 = label_w, width - margin

    def px(v: float) -> float:
        return x0 + (np.clip(v, -span, span) + span) / (2 * span) * (x1 - x0)

    draw.rectangle([px(-2), 0, px(2), row_height * len(order)], fill="#eeeeee")
    draw.line([(px(0), 0), (px(0), row_height * len(order))], fill="#cccccc")
    for r, d in enumerate(order):
        cy = r * row_height + row_height / 2
        draw.text((2, cy - TEXT_PX / 2 - 1), f"z{d}", fill="black", font=font)
        lo, hi = m[d] - 2 * sigma[d], m[d] + 2 * sigma[d]
        draw.line([(px(lo), cy), (px(hi), cy)], fill=PALETTE[0], width=3)
        cx = px(m[d])
        draw.ellipse([cx - 3, cy - 3, cx + 3, cy + 3], fill=PALETTE[2])
        if abs(m[d]) > span:
            draw.text((cx - 8 if m[d] > 0 else cx, cy - TEXT_PX - 2), ">" if m[d] > 0 else "<", fill=PALETTE[2], font=font)
    axis_y = row_height * len(order) + 4
    for v in (-span, -2, 0, 2, span):
        label = f"{v:g}"
        tw = draw.textlength(label, font=font)
        draw.text((px(v) - tw / 2, axis_y), label, fill="black", font=font)
    return im
