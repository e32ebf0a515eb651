"""A run's decoder as one ONNX file, so that a browser (onnxruntime-web) can decode latents itself.

The graph is exactly what the explorer's `decode` computes before it converts to uint8: a flattened
latent z (B, D) float32 in, the displayable image (B, C, H, W) float32 in [0, 1] out, i.e.
`model.decode_image(model.latent_for_decode(Encoding(mean=z.reshape(-1, *latent_shape))))`. For a
VQ-VAE that includes the quantiser: every position of the pre-quantised grid is replaced by its nearest
codebook vector before the decoder runs, so the browser sends the same latents as the Python app.

The legacy TorchScript-based exporter (`dynamo=False`, opset 17) handles every model family and needs
only the `onnx` package; the file holds its weights inline (no external data). Weight storage is float32
(the default) or float16: with float16 the layers' weight tensors are stored at half the bytes and each is
cast back to float32 by a Cast node right after it, so every operation still computes in float32 and
onnxruntime folds the casts once, when it creates the session. The file's metadata records the storage
(`weights`: `float32` or `float16`).
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

import numpy as np
import torch
from torch import nn

from .errors import UserError
from .models.base import Encoding, LatentModel

OPSET = 17
INPUT_NAME = "z"
OUTPUT_NAME = "image"

WEIGHTS_METADATA_KEY = "weights"
WEIGHT_STORAGES = ("float32", "float16")
DEFAULT_WEIGHT_STORAGE = "float32"
# The weight input (W) of these operators is what float16 storage stores at half size. Everything else stays
# float32: biases and batch-norm statistics are a few KB in all, and the VQ-VAE's codebook is what the
# quantiser's argmin compares a latent against, so a rounded codebook could pick another code than torch for a
# latent near a tie between two codes, changing a whole patch of the image rather than a pixel level.
FLOAT16_WEIGHT_OPS = ("Gemm", "Conv", "ConvTranspose")
FLOAT16_MAX = 65504.0


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


def check_weight_storage(weights: str, name: str = "decoder weights") -> str:
    """UserError unless `weights` is one of WEIGHT_STORAGES; `name` is what the message calls it."""
    if weights not in WEIGHT_STORAGES:
        raise UserError(f"{name} must be {' or '.join(WEIGHT_STORAGES)}, not {weights!r}")
    return weights


def store_layer_weights_as_float16(proto) -> None:
    """Rewrite the graph in place: each layer weight (FLOAT16_WEIGHT_OPS' W input) becomes a float16
    initializer of the same name followed by a Cast to float32 that its consumers read instead."""
    # onnx is needed only to export decoders, not to train or to run the explorer.
    import onnx

    layer_weights = {node.input[1] for node in proto.graph.node
                     if node.op_type in FLOAT16_WEIGHT_OPS and len(node.input) > 1}
    casts, renamed = [], {}
    for position, tensor in enumerate(proto.graph.initializer):
        if tensor.name not in layer_weights or tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        values = onnx.numpy_helper.to_array(tensor)
        if not np.all(np.abs(values) <= FLOAT16_MAX):
            raise UserError(f"the decoder weight {tensor.name} holds values float16 cannot store "
                            f"(largest magnitude {np.abs(values).max():.3g}); export with float32 weights")
        half = onnx.numpy_helper.from_array(values.astype(np.float16), tensor.name)
        proto.graph.initializer[position].CopyFrom(half)
        renamed[tensor.name] = f"{tensor.name}.float32"
        casts.append(onnx.helper.make_node("Cast", [tensor.name], [renamed[tensor.name]],
                                           name=f"{tensor.name}.cast", to=onnx.TensorProto.FLOAT))
    for node in proto.graph.node:
        for i, name in enumerate(node.input):
            if name in renamed:
                node.input[i] = renamed[name]
    # The casts read only initializers, so they can go first: the node list stays topologically sorted.
    nodes = casts + list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)


def export_decoder(model: LatentModel, weights: str = DEFAULT_WEIGHT_STORAGE) -> bytes:
    """The model's decoder as the bytes of a single-file ONNX model (input `z` (B, D), output `image`
    (B, C, H, W), dynamic batch), its layer weights stored as `weights` (WEIGHT_STORAGES). UserError with a
    one-line reason when it cannot be exported."""
    check_weight_storage(weights)
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
        proto = onnx.load_from_string(buffer.getvalue())
        if weights == "float16":
            store_layer_weights_as_float16(proto)
        onnx.helper.set_model_props(proto, {WEIGHTS_METADATA_KEY: weights})
        onnx.checker.check_model(proto)
        data = proto.SerializeToString()
    except UserError:
        raise
    except Exception as e:  # the exporter raises many types (RuntimeError, SymbolicValueError, OnnxExporterError, ...)
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot export the decoder of this {type(model).__name__} to ONNX "
                        f"({type(e).__name__}: {first_line[:200]})") from None
    return data


def decoder_weight_storage(data: bytes) -> str:
    """The weight storage an exported decoder records in its metadata; float32 for a file without the entry
    (decoders exported before the storage was recorded hold float32 weights)."""
    # onnx is needed only to read a decoder's structure, not to train or to run the explorer.
    import onnx

    props = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}
    return props.get(WEIGHTS_METADATA_KEY, DEFAULT_WEIGHT_STORAGE)
