"""The decoders' last layer, a 3x3 convolution to a grey image's one channel, as plain matrix products.

oneDNN handles a convolution to a single output channel poorly: on the seed network (16 -> 1 channel
at 32x32, batch 100) its forward and backward take about 4 ms of a ~27 ms CPU training step, several
times what the arithmetic and memory traffic need. Written as matrix products on the channels-last
feature map X (N = B*H*W rows, C columns) the same convolution is

    forward:   P = Wm X^T            (O*9, N): every output channel's 9 tap planes
               y[o] = b[o] + sum over taps (i, j) of P[o, tap] shifted by (i - 1, j - 1)
    backward:  gP[o, tap] = gy[o] shifted back;  gX = gP^T Wm;  gWm = gP X;  gb = sum of gy

with Wm the weight as an (O*9, C) matrix. Each product streams X once; the shifts move only the
O*9 small planes. Both directions are registered as torch.library custom ops, so torch.compile calls
them as single kernels instead of tracing the Python loops.

`OutputConv2d` is an nn.Conv2d(in_channels, out_channels, 3, padding=1) (same parameters, same
state_dict keys) that takes this path for at most MAX_OUT_CHANNELS output channels on a float32
channels-last CPU input outside autocast, and nn.Conv2d's own path otherwise. The ops themselves are
correct for any number of output channels (tests check 1 and 3).
"""
from __future__ import annotations

import torch
from torch import nn

# benchmarks/output_conv.py, fp32 forward + backward against oneDNN: 1 output channel is 1.37-1.50x
# faster at 32 and 64 px with 16 or 32 input channels; 3 output channels are 0.66x, so RGB keeps oneDNN.
MAX_OUT_CHANNELS = 1
TAPS = [(i, j) for i in range(3) for j in range(3)]  # tap (i, j) reads the input at (h + i - 1, w + j - 1)


def _out_range(d: int, size: int) -> slice:
    """Output rows (or columns) that a tap with offset d (-1, 0, 1) reaches inside the image."""
    return slice(max(0, -d), size - max(0, d))


def _in_range(d: int, size: int) -> slice:
    """Input rows (or columns) that the same tap reads, aligned with _out_range."""
    return slice(max(0, d), size - max(0, -d))


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B*H*W, C): a view for a channels-last tensor."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def _weight_matrix(w: torch.Tensor) -> torch.Tensor:
    """(O, C, 3, 3) -> (O*9, C), rows ordered (output channel, tap)."""
    return w.permute(0, 2, 3, 1).reshape(w.shape[0] * 9, w.shape[1])


@torch.library.custom_op("vae_explorer::output_conv3x3", mutates_args=())
def output_conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    B, _, H, W = x.shape
    O = weight.shape[0]
    planes = torch.mm(_weight_matrix(weight), _as_rows(x).t()).view(O, 9, B, H, W)
    y = x.new_empty(B, O, H, W)
    y.copy_(bias.view(1, O, 1, 1))  # a new buffer: a custom op's output may not alias its inputs
    for o in range(O):
        for tap, (i, j) in enumerate(TAPS):
            di, dj = i - 1, j - 1
            y[:, o, _out_range(di, H), _out_range(dj, W)] += planes[o, tap, :, _in_range(di, H), _in_range(dj, W)]
    return y


@output_conv3x3.register_fake
def _(x, weight, bias):
    B, _, H, W = x.shape
    return x.new_empty(B, weight.shape[0], H, W)


@torch.library.custom_op("vae_explorer::output_conv3x3_backward", mutates_args=())
def output_conv3x3_backward(grad_out: torch.Tensor, x: torch.Tensor,
                            weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, C, H, W = x.shape
    O = weight.shape[0]
    padded = nn.functional.pad(grad_out, (1, 1, 1, 1))
    # gP[o, tap] at input position (h, w) is the gradient of the output the tap wrote from there,
    # at (h - i + 1, w - j + 1): a shifted window of the zero-padded output gradient.
    grad_planes = grad_out.new_empty(O, 9, B, H, W)
    for o in range(O):
        for tap, (i, j) in enumerate(TAPS):
            grad_planes[o, tap] = padded[:, o, 2 - i:2 - i + H, 2 - j:2 - j + W]
    grad_planes = grad_planes.view(O * 9, -1)
    grad_x = torch.mm(grad_planes.t(), _weight_matrix(weight)).view(B, H, W, C).permute(0, 3, 1, 2)
    grad_w = torch.empty_like(weight)  # in the weight's own memory format, as autograd expects
    grad_w.copy_(torch.mm(grad_planes, _as_rows(x)).view(O, 3, 3, C).permute(0, 3, 1, 2))
    return grad_x, grad_w, grad_out.sum((0, 2, 3))


@output_conv3x3_backward.register_fake
def _(grad_out, x, weight):
    B, C, H, W = x.shape
    grad_x = torch.empty_strided((B, C, H, W), (C * H * W, 1, W * C, C), dtype=x.dtype, device=x.device)
    return grad_x, torch.empty_like(weight), weight.new_empty(weight.shape[0])


def _setup_context(ctx, inputs, output):
    x, weight, _ = inputs
    ctx.save_for_backward(x, weight)


def _backward(ctx, grad_out):
    x, weight = ctx.saved_tensors
    return output_conv3x3_backward(grad_out.contiguous(), x, weight)


output_conv3x3.register_autograd(_backward, setup_context=_setup_context)


class OutputConv2d(nn.Conv2d):
    """nn.Conv2d(in_channels, out_channels, 3, padding=1) with the matrix-product path above."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 4
                and self.out_channels <= MAX_OUT_CHANNELS and self.weight.dtype == torch.float32
                and x.is_contiguous(memory_format=torch.channels_last)
                and not torch.is_autocast_enabled("cpu")):  # autocast's casts happen inside F.conv2d
            return output_conv3x3(x, self.weight, self.bias)
        return super().forward(x)
