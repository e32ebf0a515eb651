"""OutputConv2d: the decoders' last 3x3 convolution as matrix products (training/models/output_conv.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from training.models import output_conv
from training.models.output_conv import OutputConv2d, output_conv3x3, output_conv3x3_backward

CL = torch.channels_last


def inputs(batch, c_in, c_out, height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, c_in, height, width, generator=g).contiguous(memory_format=CL)
    w = torch.randn(c_out, c_in, 3, 3, generator=g).contiguous(memory_format=CL)
    b = torch.randn(c_out, generator=g)
    return x, w, b


@pytest.mark.parametrize("shape", [(3, 5, 1, 7, 9), (2, 4, 3, 6, 5), (1, 2, 1, 1, 1), (4, 16, 1, 32, 32)])
def test_forward_and_gradients_equal_conv2d(shape):
    x, w, b = inputs(*shape)
    grad_out = torch.randn(shape[0], shape[2], shape[3], shape[4], generator=torch.Generator().manual_seed(1))
    leaves = [t.clone().requires_grad_() for t in (x, w, b)]
    y = output_conv3x3(*leaves)
    y.backward(grad_out)
    # Reference in float64, so the comparison measures the new path's float32 error alone.
    ref_leaves = [t.double().requires_grad_() for t in (x, w, b)]
    ref = F.conv2d(*ref_leaves, padding=1)
    ref.backward(grad_out.double())
    assert y.shape == ref.shape
    for mine, theirs in [(y, ref)] + [(a.grad, r.grad) for a, r in zip(leaves, ref_leaves)]:
        assert torch.allclose(mine.double(), theirs, rtol=1e-5, atol=1e-4 + 1e-5 * theirs.abs().max().item())
    # Gradients come back in the layout of what they are the gradient of (autograd's layout contract).
    assert leaves[0].grad.is_contiguous(memory_format=CL) and leaves[1].grad.stride() == w.stride()


def test_custom_ops_pass_torch_library_opcheck():
    """Fake (meta) implementations agree with the real ones, autograd is registered, compile can trace them."""
    x, w, b = inputs(2, 3, 1, 5, 6)
    torch.library.opcheck(output_conv3x3, (x, w, b))
    torch.library.opcheck(output_conv3x3, (x.requires_grad_(), w.requires_grad_(), b.requires_grad_()))
    grad_out = torch.randn(2, 1, 5, 6)
    torch.library.opcheck(output_conv3x3_backward, (grad_out, x.detach(), w.detach()))


def test_module_takes_the_matrix_path_only_where_it_is_faster(monkeypatch):
    calls = []
    real = output_conv.output_conv3x3
    monkeypatch.setattr(output_conv, "output_conv3x3", lambda *a: calls.append(1) or real(*a))
    one = OutputConv2d(4, 1).to(memory_format=CL)
    rgb = OutputConv2d(4, 3).to(memory_format=CL)
    x = torch.randn(2, 4, 8, 8)
    for module, image, expected in [(one, x.contiguous(memory_format=CL), 1),   # the trainer's layout
                                    (one, x, 0),                                 # NCHW: oneDNN
                                    (one, x.double().contiguous(memory_format=CL), 0),
                                    (rgb, x.contiguous(memory_format=CL), 0)]:   # 3 channels: oneDNN
        calls.clear()
        out = module.double()(image) if image.dtype == torch.float64 else module.float()(image)
        assert len(calls) == expected
        assert torch.allclose(out, F.conv2d(image, module.weight, module.bias, padding=1), atol=1e-5)
    calls.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):   # autocast: oneDNN, which casts to bfloat16
        assert one.float()(x.contiguous(memory_format=CL)).dtype == torch.bfloat16 and not calls
    # Same parameters and state_dict keys as nn.Conv2d(4, 1, 3, padding=1).
    assert list(one.state_dict()) == list(torch.nn.Conv2d(4, 1, 3, padding=1).state_dict())


def test_compiled_module_matches_eager():
    """Traced through dynamo and AOT autograd (the part that uses the fake implementations and the
    registered backward); aot_eager needs no C++ compiler, which CI machines may lack."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.BatchNorm2d(4), torch.nn.LeakyReLU(inplace=True),
                              OutputConv2d(4, 1)).to(memory_format=CL)
    x = torch.randn(3, 4, 8, 8).contiguous(memory_format=CL)
    eager = net(x.clone().requires_grad_()).square().sum()
    eager.backward()
    eager_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad(set_to_none=True)
    compiled = torch.compile(lambda t: net(t).square().sum(), backend="aot_eager")(x.clone())
    compiled.backward()
    assert torch.allclose(compiled, eager, rtol=1e-5)
    for p, g in zip(net.parameters(), eager_grads):
        assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-5)
