"""What the explorer reads from a run's metrics.json: the one place that knows its layout."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np


@dataclass
class RunScores:
    disentanglement: list = field(default_factory=list)  # (label, value) pairs, in display order
    protocol: Optional[str] = None                        # how the disentanglement scores were measured
    active_units: Optional[int] = None
    kl_per_dim: Optional[np.ndarray] = None               # (D,) float32


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_scores(metrics: Optional[dict], latent_dim: int) -> RunScores:
    """The scores the explorer shows, from metrics.json as loaded (None or anything malformed: none)."""
    metrics = metrics if isinstance(metrics, dict) else {}
    scores = RunScores(kl_per_dim=kl_per_dim_from_metrics(metrics, latent_dim))
    d = metrics.get("disentanglement")
    if isinstance(d, dict):
        dci = d.get("dci") if isinstance(d.get("dci"), dict) else {}
        for label, value in (("MIG", d.get("mig")), ("FactorVAE score", d.get("factorvae")),
                             ("DCI disentanglement", dci.get("disentanglement")),
                             ("DCI completeness", dci.get("completeness")),
                             ("DCI informativeness", dci.get("informativeness")),
                             ("BetaVAE score", d.get("betavae"))):
            if _finite(value):
                scores.disentanglement.append((label, float(value)))
        scores.protocol = str(d["protocol"]) if d.get("protocol") else None
    au = metrics.get("active_units")
    if isinstance(au, (int, float)) and not isinstance(au, bool):
        scores.active_units = int(au)
    return scores


def kl_per_dim_from_metrics(metrics: Optional[dict], latent_dim: int) -> Optional[np.ndarray]:
    """metrics.json's `kl_per_dim` as (D,) float32 when it is complete and finite, else None."""
    values = metrics.get("kl_per_dim") if isinstance(metrics, dict) else None
    if isinstance(values, list) and len(values) == latent_dim:
        a = np.asarray([v if isinstance(v, (int, float)) else np.nan for v in values], dtype=np.float32)
        if np.all(np.isfinite(a)):
            return a
    return None
