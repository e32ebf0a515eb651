"""decoder.onnx: every model family exports, onnxruntime decodes what torch decodes, the bundled runs ship it,
`export` writes it and `export --decoder-only` writes nothing else."""
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
from training.onnx_decoder import INPUT_NAME, OPSET, OUTPUT_NAME, export_decoder, latent_size
from training.runfolder import (CONFIG_FILE, DECODER_FILE, DONE_FILE, LATENTS_FILE, WEIGHTS_FILE, load_decoder,
                                load_latents, load_run, save_decoder)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, "assets")
BUNDLED = ("dsprites-btcvae", "dsprites-vae", "mnist-vae", "mnist-vqvae", "smileys-btcvae")
TOLERANCE = 1e-4

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


def assert_single_file_float32(data: bytes, model) -> None:
    proto = onnx.load_from_string(data)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]
    for tensor in proto.graph.initializer:
        assert tensor.data_location != onnx.TensorProto.EXTERNAL, tensor.name
        if tensor.data_type != onnx.TensorProto.INT64:   # shapes and indices are int64
            assert tensor.data_type == onnx.TensorProto.FLOAT, tensor.name
    # Every initialiser is one of the model's tensors, and no tensor is stored twice.
    state = {f"model.{k}" for k in model.state_dict()}
    weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    assert all(t.name in state for t in weights), [t.name for t in weights if t.name not in state]
    contents = [(tuple(t.dims), t.raw_data) for t in weights]
    assert len(set(contents)) == len(contents)


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
    assert_single_file_float32(data, model)

    z = np.random.default_rng(1).normal(size=(3, latent_size(model))).astype(np.float32)
    expected = torch_decode(model, z)
    run = session(data)
    got = run.run([OUTPUT_NAME], {INPUT_NAME: z})[0]
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.abs(got - expected).max() <= TOLERANCE
    assert got.min() >= 0.0 and got.max() <= 1.0
    one = run.run([OUTPUT_NAME], {INPUT_NAME: z[1:2]})[0]     # the batch axis is dynamic
    assert one.shape == (1, *expected.shape[1:]) and np.abs(one - expected[1:2]).max() <= TOLERANCE


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
def test_bundled_decoder_matches_its_torch_model(name):
    run_dir = os.path.join(ASSETS, name)
    data = load_decoder(run_dir)
    assert len(data) < 10 * 1024 * 1024
    model = load_run(run_dir).model
    assert_single_file_float32(data, model)
    z = fixed_latents(run_dir, model)
    got = session(data).run([OUTPUT_NAME], {INPUT_NAME: z})[0]
    assert np.abs(got - torch_decode(model, z)).max() <= TOLERANCE
    # The explorer's own decode of the same latents (uint8): the same pixels, up to rounding at a half level.
    shown = latent_ops.decode(load_run_folder(run_dir), z).astype(np.int16)
    as_uint8 = np.round(np.clip(got, 0.0, 1.0) * 255.0).transpose(0, 2, 3, 1).astype(np.int16)
    assert np.abs(shown - as_uint8).max() <= 1


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
    # The export is reproducible: the same bytes as the shipped file of the same weights.
    assert load_decoder(exported_run) == load_decoder(os.path.join(ASSETS, "dsprites-vae"))


def test_export_decoder_only_touches_nothing_else(exported_run, capsys):
    os.remove(os.path.join(exported_run, DECODER_FILE))
    before = {}
    for file in sorted(os.listdir(exported_run)):
        path = os.path.join(exported_run, file)
        with open(path, "rb") as f:
            before[file] = (os.stat(path).st_mtime_ns, f.read())
    capsys.readouterr()
    assert cli_main(["export", exported_run, "--decoder-only"]) == 0
    assert DECODER_FILE in capsys.readouterr().out
    assert sorted(os.listdir(exported_run)) == sorted([*before, DECODER_FILE])
    for file, (mtime, content) in before.items():
        path = os.path.join(exported_run, file)
        with open(path, "rb") as f:
            assert (os.stat(path).st_mtime_ns, f.read()) == (mtime, content), file
    assert load_decoder(exported_run) == load_decoder(os.path.join(ASSETS, "dsprites-vae"))


def test_export_of_a_folder_that_is_not_a_run_is_a_one_line_error(tmp_path, capsys):
    result = python_m_training("export", str(tmp_path))
    assert_one_line_user_error(result, "not a run folder")
    assert cli_main(["export", str(tmp_path), "--decoder-only"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "not a run folder" in err
    assert os.listdir(tmp_path) == []
