"""Disentanglement metrics under the disentanglement_lib protocol (Locatello et al. 2019).

The metric functions see only a ground-truth source (factor_sizes, sample_factors,
observations_from_factors) and a representation function (observations -> (n, d) numpy); they do not
depend on torch. `DatasetSource` and `model_representation` adapt the project's datasets and models.
"""
from .beta_vae import betavae_score
from .dci import dci
from .disentanglement import (METRIC_NAMES, PROTOCOL, PROTOCOL_COUNTS, DatasetSource, evaluate_all, model_representation,
                              scaled_counts)
from .factor_vae import factorvae_score
from .mig import histogram_discretize, mig
from .sampling import GroundTruthSource, SyntheticSource

__all__ = [
    "METRIC_NAMES", "PROTOCOL", "PROTOCOL_COUNTS", "DatasetSource", "GroundTruthSource", "SyntheticSource", "betavae_score",
    "dci", "evaluate_all", "factorvae_score", "histogram_discretize", "mig", "model_representation",
    "scaled_counts",
]
