"""Attribute vectors over posterior means (White 2016, "Sampling Generative Networks").

For every label: split the exported points into "has the attribute" / "has not" (binary labels as
they are; categorical and continuous labels at a threshold recorded next to the vector), then

- plain vector      v = mean(μ | attribute) − mean(μ | not attribute);
- corrected vector: the confounder is the other label whose binarised values correlate most with
  this one (|Pearson|). Correlated labels leak into the plain vector (smiling ~ female in CelebA);
  balancing the 2×2 cells (attribute × confounder) to equal counts before taking the means removes
  that leak. Replicating every cell to the same count is the same as weighting each cell equally,
  so the balanced difference is computed exactly as the mean over confounder values c of
  mean(μ | a=1, c) − mean(μ | a=0, c) (no random replication, no rounding).
- quality: ROC-AUC of the score μ·v as a classifier of the attribute, for both vectors.

The result is the content of `attributes.json` (docs/run-format.md).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score


FORMAT_VERSION = 1
BINARY_THRESHOLD = 0.5


def balanced_cut(values: np.ndarray) -> Optional[float]:
    """Midpoint between two consecutive distinct values that splits `values > t` closest to 50/50."""
    distinct = np.unique(values)
    if distinct.size < 2:
        return None
    cuts = (distinct[:-1] + distinct[1:]) / 2.0
    share_above = np.array([(values > t).mean() for t in cuts])
    return float(cuts[np.argmin(np.abs(share_above - 0.5))])


def choose_threshold(values: np.ndarray, kind: str) -> Optional[float]:
    """Where a label is split into attribute / not attribute (`value > threshold`); None if constant.

    binary: 0.5. continuous: the median (or the most balanced cut when ties at the median leave
    one side empty). categorical: the most balanced cut between consecutive class values.
    """
    values = values[np.isfinite(values)]
    if values.size == 0 or np.unique(values).size < 2:
        return None
    if kind == "binary":
        above = (values > BINARY_THRESHOLD).mean()
        return BINARY_THRESHOLD if 0 < above < 1 else balanced_cut(values)
    if kind == "continuous":
        median = float(np.median(values))
        above = (values > median).mean()
        return median if 0 < above < 1 else balanced_cut(values)
    return balanced_cut(values)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> Optional[float]:
    """ROC-AUC of `scores` as a classifier of `positive` (None when only one class is present)."""
    if positive.all() or not positive.any():
        return None
    return float(roc_auc_score(positive.astype(np.int64), scores))


def plain_vector(mu: np.ndarray, positive: np.ndarray) -> np.ndarray:
    return mu[positive].mean(0) - mu[~positive].mean(0)


def balanced_vector(mu: np.ndarray, positive: np.ndarray, confounder: np.ndarray) -> Optional[np.ndarray]:
    """Attribute vector with the (attribute × confounder) cells balanced (equal weight per cell).

    Only confounder values with both attribute classes present count (a cell that is empty cannot be
    replicated); None if there is no such value.
    """
    diffs = []
    for c in (False, True):
        pos, neg = positive & (confounder == c), ~positive & (confounder == c)
        if pos.any() and neg.any():
            diffs.append(mu[pos].mean(0) - mu[neg].mean(0))
    if not diffs:
        return None
    return np.mean(diffs, axis=0)


def binary_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two boolean vectors (0 when either is constant)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    sa, sb = a.std(), b.std()
    if sa == 0 or sb == 0:
        return 0.0
    return float(((a - a.mean()) * (b - b.mean())).mean() / (sa * sb))


def binarise_labels(labels: np.ndarray, names: Sequence[str], kinds: Sequence[str]) -> dict:
    """name -> (threshold, positive mask, valid mask) for every label that is not constant."""
    out = {}
    for j, (name, kind) in enumerate(zip(names, kinds)):
        values = labels[:, j].astype(np.float64)
        threshold = choose_threshold(values, kind)
        if threshold is None:
            continue
        valid = np.isfinite(values)
        out[name] = (threshold, (values > threshold) & valid, valid)
    return out


def _float_list(v: np.ndarray) -> list:
    return [float(x) for x in np.asarray(v, dtype=np.float32)]


def _auc_entry(auc: Optional[float]) -> Optional[float]:
    return None if auc is None or math.isnan(auc) else round(auc, 6)


def attribute_vectors(mu: np.ndarray, labels: np.ndarray, names: Sequence[str],
                      kinds: Sequence[str]) -> dict:
    """The `attributes.json` document for posterior means `mu` (N, D) and labels (N, K)."""
    mu = np.asarray(mu, dtype=np.float64).reshape(len(mu), -1)
    labels = np.asarray(labels, dtype=np.float64).reshape(len(mu), -1)
    split = binarise_labels(labels, names, kinds)
    attributes, skipped = {}, {}
    for name, kind in zip(names, kinds):
        if name not in split:
            skipped[name] = "constant over the exported points"
            continue
        threshold, positive, valid = split[name]
        m, pos = mu[valid], positive[valid]
        if pos.all() or not pos.any():
            skipped[name] = "only one class among the exported points"
            continue
        vector = plain_vector(m, pos)
        entry = {"kind": kind, "threshold": threshold, "vector": _float_list(vector),
                 "auc": _auc_entry(roc_auc(m @ vector, pos)),
                 "n_pos": int(pos.sum()), "n_neg": int((~pos).sum())}
        entry["corrected"] = corrected_entry(mu, name, split, vector, entry["auc"])
        attributes[name] = entry
    doc = {"format_version": FORMAT_VERSION, "attributes": attributes}
    if skipped:
        doc["skipped"] = skipped
    return doc


def corrected_entry(mu: np.ndarray, name: str, split: dict, plain: np.ndarray,
                    plain_auc: Optional[float]) -> dict:
    """Bias-corrected vector against the most correlated other label (plain vector if none)."""
    _, positive, valid = split[name]
    best, best_corr = None, 0.0
    for other, (_, other_pos, other_valid) in split.items():
        if other == name:
            continue
        both = valid & other_valid
        corr = binary_correlation(positive[both], other_pos[both]) if both.sum() > 1 else 0.0
        if abs(corr) > abs(best_corr):
            best, best_corr = other, corr
    if best is None:
        return {"vector": _float_list(plain), "auc": plain_auc, "confounder": None, "correlation": 0.0,
                "balanced": False}
    both = valid & split[best][2]
    m, pos, conf = mu[both], positive[both], split[best][1][both]
    cells = [[int((~pos & ~conf).sum()), int((~pos & conf).sum())],
             [int((pos & ~conf).sum()), int((pos & conf).sum())]]
    # Fully balanced only when all four cells are populated; with one empty cell the vector is the
    # difference inside the one complete confounder stratum, with none it falls back to the plain one.
    balanced = min(min(row) for row in cells) > 0
    vector = balanced_vector(m, pos, conf)
    if vector is None:
        vector = plain
    return {"vector": _float_list(vector), "auc": _auc_entry(roc_auc(m @ vector, pos)),
            "confounder": best, "correlation": round(best_corr, 6), "balanced": balanced,
            "cells": cells}

