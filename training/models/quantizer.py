"""Vector quantiser with an EMA codebook (van den Oord et al. 2017; Razavi et al. 2019).

Forward: z_e (B, D, *spatial) -> (quantized, indices, loss)
  indices_p  = argmin_k ‖z_e,p − e_k‖²                       per position p
  quantized  = z_e + sg(e[indices] − z_e)                     straight-through estimator: the decoder's
                                                              gradient flows to the encoder unchanged
  loss       = commitment · Σ_{p, d} (z_e,p,d − sg(e)_p,d)² / B   summed over code dims and positions,
                                                              averaged over the batch (the project's one
                                                              loss convention, so `commitment` = β of the
                                                              paper keeps its meaning at every grid size)
The codebook gets no gradient: in training mode it follows exponential moving averages
of the assignments (`_ema_update`), with Laplace smoothing of the cluster sizes, and codes
whose EMA cluster size falls below a threshold are restarted from encoder outputs
(`_restart_dead_codes`). A fresh quantiser has empty statistics, so its first training
step restarts every unused code from the batch: a data-dependent initialisation.

The codebook and its statistics are buffers (saved in the state_dict). Under data-parallel
training (training/distributed.py), `reduce_stats` sums the per-batch statistics over ranks, so
that every rank applies the EMA update of the global batch, and restarts take their vectors from
rows of the global batch that every rank picks alike: N processes keep the codebook one would.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import all_reduce_sum_, random_global_rows


class VectorQuantizer(nn.Module):
    def __init__(self, num_codes: int, code_dim: int, commitment: float = 0.25, decay: float = 0.99,
                 eps: float = 1e-5, dead_code_threshold: float = 1e-3):
        super().__init__()
        self.num_codes = num_codes
        self.code_dim = code_dim
        self.commitment = commitment
        self.decay = decay
        self.eps = eps
        self.dead_code_threshold = dead_code_threshold
        # A restarted code counts as having been assigned this many vectors, so that it survives
        # ~ln(restart_size / threshold) / (1 − decay) steps without assignments before the next restart.
        self.restart_size = max(1.0, 2.0 * dead_code_threshold)
        self.register_buffer("codebook", torch.randn(num_codes, code_dim))
        # EMA statistics, unsmoothed: N_k (assignment counts) and m_k (sums of assigned vectors).
        self.register_buffer("cluster_size", torch.zeros(num_codes))
        self.register_buffer("embed_sum", torch.zeros(num_codes, code_dim))

    # ---- lookups (no state change) ---------------------------------------------------------------------
    def nearest_codes(self, flat: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each row of flat (N, D): argmin_k ‖x‖² − 2 x·e_k + ‖e_k‖²."""
        # float32 even under autocast: half-precision distances make unreliable argmins.
        with torch.autocast(device_type=flat.device.type, enabled=False):
            flat = flat.float()
            distances = (flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ self.codebook.t()
                         + self.codebook.pow(2).sum(1).unsqueeze(0))
            return distances.argmin(dim=1)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors for indices (B, *spatial) -> (B, D, *spatial)."""
        vectors = F.embedding(indices, self.codebook)
        # An explicit permutation rather than movedim(-1, 1): the ONNX exporter writes the latter as a
        # Transpose with a negative axis, which the ONNX spec and onnxruntime refuse.
        last = vectors.dim() - 1
        return vectors.permute(0, last, *range(1, last))

    def quantize(self, z_e: torch.Tensor) -> torch.Tensor:
        """Nearest-code indices (B, *spatial) for z_e (B, D, *spatial); no codebook update."""
        flat = z_e.movedim(1, -1).reshape(-1, self.code_dim)
        return self.nearest_codes(flat).view(z_e.shape[0], *z_e.shape[2:])

    # ---- training pass ---------------------------------------------------------------------------------
    def forward(self, z_e: torch.Tensor):
        batch = z_e.shape[0]
        # Loss and EMA statistics in float32 even under autocast.
        with torch.autocast(device_type=z_e.device.type, enabled=False):
            z = z_e.float()
            flat = z.movedim(1, -1).reshape(-1, self.code_dim)
            flat_indices = self.nearest_codes(flat)
            quantized = F.embedding(flat_indices, self.codebook).view(batch, *z.shape[2:], self.code_dim)
            quantized = quantized.movedim(-1, 1)
            loss = self.commitment * (z - quantized.detach()).pow(2).sum() / batch
            if self.training:
                with torch.no_grad():
                    self._ema_update(flat.detach(), flat_indices)
                    self._restart_dead_codes(flat.detach(), batch)
            quantized = z + (quantized - z).detach()
        return quantized, flat_indices.view(batch, *z.shape[2:]), loss

    def reduce_stats(self, counts: torch.Tensor, sums: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-batch statistics -> global ones: sum over ranks under data-parallel training, else identity."""
        return all_reduce_sum_(counts), all_reduce_sum_(sums)

    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        """One EMA step with Laplace smoothing (Sonnet's VectorQuantizerEMA formulation):

        n_k = #{p : idx_p = k},  s_k = Σ_{p : idx_p = k} z_p        (then `reduce_stats`)
        N_k ← γ N_k + (1 − γ) n_k,   m_k ← γ m_k + (1 − γ) s_k        (γ = decay)
        Ñ_k = (N_k + ε) / (Σ_j N_j + K ε) · Σ_j N_j                  (Laplace smoothing, never 0)
        e_k = m_k / Ñ_k
        A code that has never been assigned anything (N_k = 0) keeps its vector: it has no
        estimate yet (and is due for a restart).
        """
        counts = torch.bincount(indices, minlength=self.num_codes).to(flat.dtype)
        sums = torch.zeros_like(self.embed_sum).index_add_(0, indices, flat)
        counts, sums = self.reduce_stats(counts, sums)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1.0 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1.0 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (total + self.num_codes * self.eps) * total
        updated = self.embed_sum / smoothed.unsqueeze(1)
        self.codebook.copy_(torch.where((self.cluster_size > 0).unsqueeze(1), updated, self.codebook))

    def _restart_dead_codes(self, flat: torch.Tensor, batch: int) -> None:
        """Move every code whose EMA cluster size is below the threshold onto a random encoder output.

        Branch-free (no host sync): candidates are drawn for all codes and kept only where dead.
        Under data-parallel training the candidates are rows of the global batch, the same on every rank.
        """
        dead = (self.cluster_size < self.dead_code_threshold).unsqueeze(1)
        candidates = random_global_rows(flat, batch, self.num_codes)
        self.codebook.copy_(torch.where(dead, candidates, self.codebook))
        self.embed_sum.copy_(torch.where(dead, candidates * self.restart_size, self.embed_sum))
        self.cluster_size.copy_(torch.where(dead.squeeze(1), torch.full_like(self.cluster_size, self.restart_size),
                                            self.cluster_size))


def codebook_usage(indices: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(perplexity, share of codes used) of a batch of code indices.

    perplexity = exp(−Σ_k p_k log p_k) with p_k the share of positions assigned to code k:
    num_codes when all codes are used equally, 1 when a single code takes everything.
    """
    counts = torch.bincount(indices.reshape(-1), minlength=num_codes).float()
    p = counts / counts.sum()
    perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
    return perplexity, (counts > 0).float().mean()
