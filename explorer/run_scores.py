"""The scores the explorer's disentanglement tab shows, read from metrics.json through training.runfolder."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from training.runfolder import Metrics

# (label, score name in training.runfolder.SCORE_PATHS), in display order.
DISENTANGLEMENT_SCORES = (("MIG", "mig"), ("FactorVAE score", "factorvae"),
                          ("DCI disentanglement", "dci_disentanglement"), ("DCI completeness", "dci_completeness"),
                          ("DCI informativeness", "dci_informativeness"), ("BetaVAE score", "betavae"))


@dataclass
class RunScores:
    disentanglement: list = field(default_factory=list)  # (label, value) pairs, in display order
    protocol: Optional[str] = None                        # how the disentanglement scores were measured
    active_units: Optional[int] = None
    kl_per_dim: Optional[np.ndarray] = None               # (D,) float32


def read_scores(metrics: Optional[Metrics], latent_dim: int) -> RunScores:
    """The scores the explorer shows (none for a run without metrics.json)."""
    if metrics is None:
        return RunScores()
    scores = RunScores(kl_per_dim=kl_per_dim_from_metrics(metrics, latent_dim))
    for label, name in DISENTANGLEMENT_SCORES:
        value = metrics.score(name)
        if value is not None:
            scores.disentanglement.append((label, float(value)))
    protocol = (metrics.disentanglement or {}).get("protocol")
    scores.protocol = str(protocol) if protocol else None
    active_units = metrics.score("active_units")
    scores.active_units = None if active_units is None else int(active_units)
    return scores


def kl_per_dim_from_metrics(metrics: Optional[Metrics], latent_dim: int) -> Optional[np.ndarray]:
    """metrics.json's `kl_per_dim` as (D,) float32 when it is complete and finite, else None."""
    values = metrics.kl_per_dim if metrics is not None else None
    if values is not None and len(values) == latent_dim:
        a = np.asarray([v if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan for v in values],
                       dtype=np.float32)
        if np.all(np.isfinite(a)):
            return a
    return None
