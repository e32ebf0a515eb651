"""decoder.onnx: every model family exports, with float32 or float16 weight storage, onnxruntime decodes what torch
decodes, the bundled runs ship it, `export` writes it and `export --decoder-only` writes nothing else."""
from __future__ import annotations

import os
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from explorer import latent_ops
from explorer.runs import load_run_folder
from helpers_eval import assert_one_line_user_error, python_m_training
from test_models import tiny_config
from training.cli import main as cli_main
from training.errors import UserError
from training.models import MODELS, build_model
from training.models.base import Encoding
from training.onnx_decoder import (FLOAT16_WEIGHT_OPS, INPUT_NAME, OPSET, OUTPUT_NAME, WEIGHTS_METADATA_KEY,
                                   decoder_weight_storage, export_decoder, latent_size)
from training.runfolder import (CONFIG_FILE, DECODER_FILE, DONE_FILE, LATENTS_FILE, WEIGHTS_FILE, load_decoder,
                                load_latents, load_run, save_decoder)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, "assets")
BUNDLED = ("dsprites-btcvae", "dsprites-vae", "mnist-ae", "mnist-vae", "mnist-vqvae", "smileys-btcvae")
TOLERANCE = 1e-4
# float16 weight storage rounds each layer weight to 11 significant bits (relative error <= 2^-11), and the errors
# of all layers add up in the output. Measured over 1,000 latents of each bundled run
# (benchmarks/decoder_precision.py): 4.7e-4 to 2.3e-3 on the runs with a Bernoulli likelihood, whose sigmoid
# squashes the error, and 5.2e-3 on smileys-btcvae, whose Gaussian likelihood leaves its output unsquashed; the
# tiny models here stay within 1e-4. The bound is 1.5 8-bit levels: a displayed pixel moves by one level at
# most, two where torch's value sits next to a rounding boundary.
FLOAT16_TOLERANCE = 1.5 / 255
# Of the 8-bit pixels, round(255 x), at least this share is within one level of torch's (measured: all but 2 of
# smileys-btcvae's 12.3 million) and none is more than two levels away.
FLOAT16_WITHIN_ONE_LEVEL = 0.999

# Every family with its default arch, plus the VQ-VAE's other arch; each with and without batch norm, under
# both activations, and one Gaussian likelihood (its output is clamped rather than squashed).
FAMILIES = [(name, None) for name in MODELS] + [("vqvae", "resnet")]
CASES = [(name, arch, bn, act, "bernoulli") for name, arch in FAMILIES
         for bn, act in ((False, "relu"), (True, "leaky_relu"), (True, "relu"), (False, "leaky_relu"))]
CASES += [("vae", None, True, "leaky_relu", "gaussian"), ("vqvae", None, False, "relu", "gaussian")]


def session(data: bytes) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


@torch.no_grad()
def torch_decode(model, z: np.ndarray) -> np.ndarray:
    """What the graph must compute (explorer.latent_ops.decode before its uint8 conversion)."""
    zz = torch.from_numpy(z).reshape(-1, *model.latent_shape)
    return model.decode_image(model.latent_for_decode(Encoding(mean=zz))).numpy()


def randomise_batch_norm(model: torch.nn.Module) -> None:
    """An untrained batch norm is the identity (mean 0, var 1, weight 1, bias 0): give it statistics so that
    an exporter that dropped or misread it would show."""
    generator = torch.Generator().manual_seed(5)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.3)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.2)


def assert_single_file(data: bytes, model, weights: str = "float32") -> None:
    """One self-contained file of the model's own tensors; with float16 storage the layer weights (the W input
    of Gemm, Conv, ConvTranspose) are float16, each read only by a Cast to float32, and the rest stays float32."""
    proto = onnx.load_from_string(data)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]
    assert {p.key: p.value for p in proto.metadata_props} == {WEIGHTS_METADATA_KEY: weights}
    assert decoder_weight_storage(data) == weights
    consumers = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    half = set()
    for tensor in proto.graph.initializer:
        assert tensor.data_location != onnx.TensorProto.EXTERNAL, tensor.name
        if tensor.data_type == onnx.TensorProto.FLOAT16:
            half.add(tensor.name)
            assert weights == "float16", tensor.name
            casts = consumers[tensor.name]
            assert [(c.op_type, onnx.helper.get_attribute_value(c.attribute[0])) for c in casts] == \
                [("Cast", onnx.TensorProto.FLOAT)], tensor.name
            assert {n.op_type for n in consumers[casts[0].output[0]]} <= set(FLOAT16_WEIGHT_OPS), tensor.name
        elif tensor.data_type != onnx.TensorProto.INT64:   # shapes and indices are int64
            assert tensor.data_type == onnx.TensorProto.FLOAT, tensor.name
    matrices = {f"model.{k}" for k, v in model.state_dict().items() if k.endswith("weight") and v.dim() >= 2}
    layer_weights = {t.name for t in proto.graph.initializer} & matrices
    assert half == (layer_weights if weights == "float16" else set())
    # Every initialiser is one of the model's tensors, and no tensor is stored twice.
    state = {f"model.{k}" for k in model.state_dict()}
    stored = [t for t in proto.graph.initializer if t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    assert all(t.name in state for t in stored), [t.name for t in stored if t.name not in state]
    contents = [(tuple(t.dims), t.raw_data) for t in stored]
    assert len(set(contents)) == len(contents)


def assert_float16_close(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.abs(got - expected).max() <= FLOAT16_TOLERANCE
    levels = np.abs(np.round(got * 255.0) - np.round(expected * 255.0))
    assert (levels <= 1).mean() >= FLOAT16_WITHIN_ONE_LEVEL and levels.max() <= 2


@pytest.mark.parametrize("name, arch, batch_norm, act, likelihood", CASES)
def test_every_family_exports_and_onnxruntime_matches_torch(name, arch, batch_norm, act, likelihood):
    torch.manual_seed(0)
    extra = {"arch": arch} if arch else {}
    model = build_model(tiny_config(name, batch_norm=batch_norm, activation=act, likelihood=likelihood, **extra))
    randomise_batch_norm(model)
    model.train()            # the export must use eval mode on a copy, whatever mode the caller's model is in
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = export_decoder(model)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    assert_single_file(data, model)

    z = np.random.default_rng(1).normal(size=(3, latent_size(model))).astype(np.float32)
    expected = torch_decode(model, z)
    run = session(data)
    got = run.run([OUTPUT_NAME], {INPUT_NAME: z})[0]
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.abs(got - expected).max() <= TOLERANCE
    assert got.min() >= 0.0 and got.max() <= 1.0
    one = run.run([OUTPUT_NAME], {INPUT_NAME: z[1:2]})[0]     # the batch axis is dynamic
    assert one.shape == (1, *expected.shape[1:]) and np.abs(one - expected[1:2]).max() <= TOLERANCE


def layer_weight_bytes(data: bytes) -> int:
    """Bytes of the layer weights (the W input of Gemm, Conv, ConvTranspose) in a float32 file."""
    proto = onnx.load_from_string(data)
    names = {node.input[1] for node in proto.graph.node if node.op_type in FLOAT16_WEIGHT_OPS}
    return sum(len(t.raw_data) for t in proto.graph.initializer if t.name in names)


@pytest.mark.parametrize("name, arch, batch_norm, act, likelihood", CASES)
def test_every_family_exports_float16_weights_at_half_size_that_decode_like_torch(name, arch, batch_norm, act,
                                                                                    likelihood):
    torch.manual_seed(0)
    extra = {"arch": arch} if arch else {}
    model = build_model(tiny_config(name, batch_norm=batch_norm, activation=act, likelihood=likelihood, **extra))
    randomise_batch_norm(model)
    model.eval()
    full, half = export_decoder(model), export_decoder(model, weights="float16")
    assert_single_file(half, model, "float16")
    # Each layer weight saves two bytes a value; the casts that replace them cost a few dozen bytes each.
    weight_bytes = layer_weight_bytes(full)
    assert len(full) - len(half) >= 0.45 * weight_bytes
    if weight_bytes >= 0.9 * len(full):    # the conv models: their layer weights are nearly the whole file
        assert len(half) < 0.6 * len(full)

    z = np.random.default_rng(1).normal(size=(3, latent_size(model))).astype(np.float32)
    expected = torch_decode(model, z)
    run = session(half)
    assert_float16_close(run.run([OUTPUT_NAME], {INPUT_NAME: z})[0], expected)
    assert_float16_close(run.run([OUTPUT_NAME], {INPUT_NAME: z[1:2]})[0], expected[1:2])


def test_an_unknown_weight_storage_is_a_one_line_user_error():
    model = build_model(tiny_config("vae"))
    with pytest.raises(UserError, match="float32 or float16, not 'float8'") as info:
        export_decoder(model, weights="float8")
    assert "\n" not in str(info.value)


def test_a_decoder_without_the_metadata_entry_holds_float32_weights():
    proto = onnx.load_from_string(export_decoder(build_model(tiny_config("vae"))))
    del proto.metadata_props[:]
    assert decoder_weight_storage(proto.SerializeToString()) == "float32"


def test_a_channels_last_model_exports_and_stays_channels_last():
    torch.manual_seed(0)
    model = build_model(tiny_config("vae", batch_norm=True)).eval()
    model.to(memory_format=torch.channels_last)
    z = np.random.default_rng(2).normal(size=(3, latent_size(model))).astype(np.float32)
    got = session(export_decoder(model)).run([OUTPUT_NAME], {INPUT_NAME: z})[0]
    assert np.abs(got - torch_decode(model, z)).max() <= TOLERANCE
    conv = next(w for w in model.decoder.parameters() if w.dim() == 4 and w.shape[1] > 1)
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()


def test_a_model_that_cannot_be_exported_is_a_one_line_user_error(capfd):
    class Unexportable(torch.nn.Module):
        latent_shape = (2,)

        def latent_for_decode(self, enc):
            return enc.mean

        def decode_image(self, z):
            # An operator ONNX has no counterpart for at opset 17.
            return torch.special.zeta(z, z).reshape(z.shape[0], 1, 1, 2)

    with pytest.raises(UserError) as info:
        export_decoder(Unexportable())
    assert "\n" not in str(info.value) and "cannot export the decoder" in str(info.value)
    assert "special_zeta" in str(info.value)
    # The exporter's own dump of the graph does not reach the terminal.
    captured = capfd.readouterr()
    assert "Torch IR graph" not in captured.out + captured.err


# ---- the bundled runs ---------------------------------------------------------------------------------------------
def fixed_latents(run_dir: str, model) -> np.ndarray:
    """Three latents: for a VQ-VAE exported means (latents.npz mu rows), so that no grid cell sits on a tie
    between two codes; for the others, exported means and two N(0, I) draws."""
    mu = load_latents(run_dir)["mu"]
    if callable(getattr(model, "decode_codes", None)):
        return np.ascontiguousarray(mu[[0, 7, 42]], dtype=np.float32)
    draws = np.random.default_rng(3).normal(size=(2, mu.shape[1])).astype(np.float32)
    return np.concatenate([mu[:1], draws]).astype(np.float32)


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_decoder_is_float16_and_matches_its_torch_model(name):
    run_dir = os.path.join(ASSETS, name)
    data = load_decoder(run_dir)
    model = load_run(run_dir).model
    assert_single_file(data, model, "float16")
    # What scripts/build_assets.sh's `export --decoder-weights float16` writes from the shipped weights, at about
    # half the bytes of the float32 file (MNIST VAE and AE: 2.85 MB -> 1.43 MB).
    assert data == export_decoder(model, weights="float16")
    assert len(data) < 0.6 * len(export_decoder(model)) and len(data) < 2 * 1024 * 1024
    z = fixed_latents(run_dir, model)
    got = session(data).run([OUTPUT_NAME], {INPUT_NAME: z})[0]
    assert_float16_close(got, torch_decode(model, z))
    # The explorer's own decode of the same latents (uint8, from torch): the same pixels within the float16 bound.
    shown = latent_ops.decode(load_run_folder(run_dir), z).astype(np.int16)
    as_uint8 = np.round(np.clip(got, 0.0, 1.0) * 255.0).transpose(0, 2, 3, 1).astype(np.int16)
    levels = np.abs(shown - as_uint8)
    assert (levels <= 1).mean() >= FLOAT16_WITHIN_ONE_LEVEL and levels.max() <= 2


def test_load_decoder_refuses_a_missing_or_foreign_file(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_decoder(str(tmp_path))
    (tmp_path / DECODER_FILE).write_bytes(b"PK\x03\x04 not an onnx model")
    with pytest.raises(UserError, match="not an ONNX model"):
        load_decoder(str(tmp_path))
    save_decoder(str(tmp_path), b"\x08\x08rest")
    assert load_decoder(str(tmp_path)) == b"\x08\x08rest"


# ---- the export command -------------------------------------------------------------------------------------------
# In-process (`training.cli.main`, the code `python -m training` runs) where a fresh interpreter adds nothing but
# its start-up: on a loaded 2-core machine each one costs 10-15 s.
@pytest.fixture(scope="module")
def exported_run(tmp_path_factory):
    """A copy of a bundled dSprites run (procedural data: no dataset on disk) exported by the command; three
    points keep the map a PCA, so no UMAP is fitted."""
    run_dir = str(tmp_path_factory.mktemp("onnx") / "run")
    os.makedirs(run_dir)
    for file in (CONFIG_FILE, WEIGHTS_FILE, DONE_FILE):
        shutil.copy(os.path.join(ASSETS, "dsprites-vae", file), run_dir)
    assert cli_main(["export", run_dir, "--n", "3", "--split", "test"]) == 0
    return run_dir


def test_export_writes_the_decoder_with_the_latents(exported_run):
    assert os.path.isfile(os.path.join(exported_run, LATENTS_FILE))
    # float32 weights by default, and the export is reproducible: the same bytes from the same weights.
    data = load_decoder(exported_run)
    assert decoder_weight_storage(data) == "float32"
    assert data == export_decoder(load_run(os.path.join(ASSETS, "dsprites-vae")).model)


def test_export_decoder_only_touches_nothing_else(exported_run, capsys):
    os.remove(os.path.join(exported_run, DECODER_FILE))
    before = {}
    for file in sorted(os.listdir(exported_run)):
        path = os.path.join(exported_run, file)
        with open(path, "rb") as f:
            before[file] = (os.stat(path).st_mtime_ns, f.read())
    capsys.readouterr()
    assert cli_main(["export", exported_run, "--decoder-only", "--decoder-weights", "float16"]) == 0
    assert DECODER_FILE in capsys.readouterr().out
    assert sorted(os.listdir(exported_run)) == sorted([*before, DECODER_FILE])
    for file, (mtime, content) in before.items():
        path = os.path.join(exported_run, file)
        with open(path, "rb") as f:
            assert (os.stat(path).st_mtime_ns, f.read()) == (mtime, content), file
    # The shipped file is this command's output on the same weights.
    assert load_decoder(exported_run) == load_decoder(os.path.join(ASSETS, "dsprites-vae"))


def folder_state(path: str) -> dict:
    """{file name: (mtime, bytes)} of a folder's files."""
    state = {}
    for file in sorted(os.listdir(path)):
        with open(os.path.join(path, file), "rb") as f:
            state[file] = (os.stat(os.path.join(path, file)).st_mtime_ns, f.read())
    return state


@pytest.mark.parametrize("extra", [[], ["--decoder-only"]])
def test_a_bad_decoder_weights_value_is_a_one_line_error_that_writes_nothing(exported_run, capsys, extra):
    before = folder_state(exported_run)
    capsys.readouterr()
    assert cli_main(["export", exported_run, *extra, "--decoder-weights", "half"]) == 2
    assert capsys.readouterr().err == "error: --decoder-weights must be float32 or float16, not 'half'\n"
    assert folder_state(exported_run) == before


def test_export_of_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path, capsys):
    result = python_m_training("export", str(tmp_path))
    assert_one_line_user_error(result, "not a run folder")
    assert cli_main(["export", str(tmp_path), "--decoder-only"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "not a run folder" in err
    assert os.listdir(tmp_path) == []
