"""A run's decoder as one ONNX file, so that a browser (onnxruntime-web) can decode latents itself.

The graph is exactly what the explorer's `decode` computes before it converts to uint8: a flattened
latent z (B, D) float32 in, the displayable image (B, C, H, W) float32 in [0, 1] out, i.e.
`model.decode_image(model.latent_for_decode(Encoding(mean=z.reshape(-1, *latent_shape))))`. For a
VQ-VAE that includes the quantiser: every position of the pre-quantised grid is replaced by its nearest
codebook vector before the decoder runs, so the browser sends the same latents as the Python app.

The legacy TorchScript-based exporter (`dynamo=False`, opset 17) handles every model family and needs
only the `onnx` package; the file holds its weights inline (no external data) as float32.
"""
from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import sys
import tempfile
import warnings

import torch
from torch import nn

from .errors import UserError
from .models.base import Encoding, LatentModel

OPSET = 17
INPUT_NAME = "z"
OUTPUT_NAME = "image"


class DecoderGraph(nn.Module):
    """The module that is traced: flattened latent -> image in [0, 1], through the model's own methods."""

    def __init__(self, model: LatentModel):
        super().__init__()
        self.model = model
        self.latent_shape = tuple(int(s) for s in model.latent_shape)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        latent = self.model.latent_for_decode(Encoding(mean=z.reshape(-1, *self.latent_shape)))
        return self.model.decode_image(latent)


def latent_size(model: LatentModel) -> int:
    return math.prod(int(s) for s in model.latent_shape)


def export_copy(model: LatentModel) -> LatentModel:
    """A CPU, float32, contiguous, eval-mode copy of the model: the caller's model is never changed.

    Contiguous because a channels_last model traces into layout-changing ops the browser does not need;
    float32 because the browser decodes in float32 and the file stays as small as the weights allow."""
    clone = copy.deepcopy(model)
    if callable(getattr(clone, "attach_prior", None)):
        clone.attach_prior(None)  # the PixelCNN prior is not part of the decoder
    return clone.to(device="cpu", dtype=torch.float32, memory_format=torch.contiguous_format).eval()


@contextlib.contextmanager
def native_output_silenced():
    """Send file descriptors 1 and 2 to a scratch file for the duration: when the legacy exporter fails, its
    C++ logger (which the exporter turns on for every call) prints the whole TorchScript graph to stdout,
    and a failed export must reach the command line as the one-line error alone."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # a process without a stdout or stderr has nothing to protect
        yield
        return
    try:
        with tempfile.TemporaryFile() as scratch:
            os.dup2(scratch.fileno(), 1)
            os.dup2(scratch.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        for fd in saved:
            os.close(fd)


def export_decoder(model: LatentModel) -> bytes:
    """The model's decoder as the bytes of a single-file ONNX model (input `z` (B, D), output `image`
    (B, C, H, W), dynamic batch). UserError with a one-line reason when it cannot be exported."""
    try:
        # onnx is needed only to export decoders, not to train or to run the explorer.
        import onnx
    except ImportError:
        raise UserError("exporting a decoder needs the onnx package (pip install onnx)") from None
    graph = DecoderGraph(export_copy(model))
    example = torch.zeros(2, latent_size(model), dtype=torch.float32)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad(), native_output_silenced():
            # The legacy exporter warns that it is deprecated on every call; the warning is not actionable here.
            warnings.simplefilter("ignore")
            torch.onnx.export(graph, (example,), buffer, dynamo=False, opset_version=OPSET,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              # Without folding every initialiser is a tensor of the model's state_dict
                              # (the exporter merges equal ones): folding would add derived copies, such
                              # as the VQ codebook transposed for the distance product.
                              do_constant_folding=False, export_params=True)
        data = buffer.getvalue()
        onnx.checker.check_model(onnx.load_from_string(data))
    except Exception as e:  # the exporter raises many types (RuntimeError, SymbolicValueError, OnnxExporterError, ...)
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot export the decoder of this {type(model).__name__} to ONNX "
                        f"({type(e).__name__}: {first_line[:200]})") from None
    return data
