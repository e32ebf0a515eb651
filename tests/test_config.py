"""Run configs: one config class per model family, flat config.json files, field setting, the same-run rule."""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os

import pytest

from helpers_trainer import REPO_ROOT, tiny_cli_args, tiny_config
from training import cli, model_configs, sweep, trainer
from training.commands import train as train_command
from training.config import (MODEL_CONFIGS, BTCVAEConfig, ModelConfig, RunConfig, VQVAEConfig, model_config,
                             same_run, set_field, set_fields)
from training.errors import UserError
from training.runfolder import read_config, write_config
from training.models import MODELS, build_model
from training.models.nets import ACTIVATIONS, KERNEL_PADDING

BUNDLED = sorted(glob.glob(os.path.join(REPO_ROOT, "assets", "*", "config.json")))
FAMILY_OF = {"dsprites-btcvae": BTCVAEConfig, "dsprites-vae": ModelConfig, "mnist-ae": ModelConfig,
             "mnist-vae": ModelConfig, "mnist-vqvae": VQVAEConfig, "smileys-btcvae": BTCVAEConfig}


def is_flat(path) -> bool:
    """Older bundled runs hold every family's fields in one flat model block; newer ones only their own."""
    flat = json.load(open(path))["model"]
    return "num_codes" in flat and "gamma" in flat and "beta" in flat


def field_names(kind) -> set:
    return {f.name for f in dataclasses.fields(kind)}


def test_every_model_name_has_a_config_class_and_the_value_lists_agree_with_the_nets():
    assert list(MODEL_CONFIGS) == list(MODELS)
    assert set(model_configs.ACTIVATIONS) == set(ACTIVATIONS)
    assert set(model_configs.KERNEL_SIZES) == set(KERNEL_PADDING)
    # Each family adds only its own fields to the base.
    assert field_names(MODEL_CONFIGS["vqvae"]) - field_names(ModelConfig) == {
        "num_codes", "code_dim", "commitment", "ema_decay", "ema_eps", "dead_code_threshold", "vq_downsample"}
    assert field_names(MODEL_CONFIGS["beta-vae"]) - field_names(ModelConfig) == {"beta", "warmup_steps"}
    assert MODEL_CONFIGS["vae"] is MODEL_CONFIGS["ae"] is ModelConfig


@pytest.mark.parametrize("path", BUNDLED, ids=lambda p: os.path.basename(os.path.dirname(p)))
def test_a_bundled_config_flat_or_not_loads_into_its_family_class(path, tmp_path):
    flat = json.load(open(path))["model"]
    cfg = read_config(path)
    kind = FAMILY_OF[os.path.basename(os.path.dirname(path))]
    assert type(cfg.model) is kind
    # A field added after the run was written (warmup_steps) reads as its default, which is what it trained with.
    assert {name: getattr(cfg.model, name) for name in field_names(kind)} == {
        k: flat.get(k, model_configs.FIELD_DEFAULTS[k]) for k in field_names(kind)}
    # Saved again, it holds only its family's fields and loads to the same config.
    write_config(str(tmp_path / "config.json"), cfg)
    assert set(json.load(open(tmp_path / "config.json"))["model"]) == field_names(kind)
    assert read_config(str(tmp_path / "config.json")) == cfg
    build_model(cfg.model)


def test_both_config_layouts_are_bundled():
    assert any(map(is_flat, BUNDLED)) and not all(map(is_flat, BUNDLED))
    assert {os.path.basename(os.path.dirname(p)) for p in BUNDLED} == set(FAMILY_OF)


def test_a_foreign_field_with_a_value_is_a_one_line_error(tmp_path):
    data = json.load(open(os.path.join(REPO_ROOT, "assets", "dsprites-vae", "config.json")))
    data["model"].update(gamma=5.0)
    path = str(tmp_path / "config.json")
    json.dump(data, open(path, "w"))
    with pytest.raises(UserError) as info:
        read_config(path)
    message = str(info.value)
    assert "\n" not in message and "model 'vae' has no field gamma (gamma=5.0)" in message and path in message
    assert "'annealed-vae'" in message
    # At its default value (and dataset_size, filled in from the data, at any value) it is dropped.
    data["model"].update(gamma=1000.0, dataset_size=123)
    json.dump(data, open(path, "w"))
    assert type(read_config(path).model) is ModelConfig
    with pytest.raises(UserError, match="unknown field.*gama"):
        RunConfig.from_dict({"model": {"name": "vae", "gama": 5.0}})
    with pytest.raises(UserError, match="unknown model 'vea'"):
        RunConfig.from_dict({"model": {"name": "vea"}})


def test_a_config_of_another_class_than_its_model_name_is_refused():
    cfg = ModelConfig(name="btcvae")
    with pytest.raises(UserError, match="BTCVAEConfig"):
        build_model(cfg)
    with pytest.raises(AttributeError, match="has no field 'beta'"):
        model_config("vae").beta = 4.0     # a VAE would ignore it


def parsed(argv: list) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    return parser.parse_args(argv)


def test_flags_and_set_for_a_field_the_model_lacks(tmp_path, capsys):
    out = str(tmp_path / "run")
    # A field of another family at its default is accepted; with another value it is an error (exit 2).
    cfg = train_command.config_from_args(parsed(tiny_cli_args(out)[1:] + ["--beta", "1", "--set", "model.c_max=25"]))
    assert type(cfg.model) is ModelConfig
    for extra, expected in [(["--beta", "4"], "model 'vae' has no field beta (beta=4.0): use 'beta-vae' or 'btcvae'"),
                            (["--set", "model.num_codes=32"], "model 'vae' has no field num_codes")]:
        assert cli.main(tiny_cli_args(out) + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and expected in err, err
    assert not os.path.exists(out)
    # The model is chosen first whatever the order: --set model.name after --beta still takes the β.
    cfg = train_command.config_from_args(parsed(tiny_cli_args(out)[1:] + ["--beta", "4", "--set", "model.name=btcvae"]))
    assert type(cfg.model) is BTCVAEConfig and cfg.model.beta == 4.0 and cfg.model.hidden == [8, 16]


def test_changing_the_model_keeps_the_shared_fields():
    cfg = tiny_config("vae")
    set_fields(cfg, [("model.tc_estimator", "mss"), ("model.name", "btcvae")])
    assert type(cfg.model) is BTCVAEConfig and cfg.model.tc_estimator == "mss" and cfg.model.latent_dim == 4


def test_leaving_a_family_refuses_its_non_default_fields():
    cfg = tiny_config("btcvae")
    cfg.model.dataset_size = 1000                     # filled in from the data: never in the way
    set_field(cfg, "model.name", "beta-vae")          # beta carries over, tc fields at their defaults go
    assert type(cfg.model) is model_configs.BetaVAEConfig
    cfg = tiny_config("btcvae")
    cfg.model.tc_estimator = "mss"
    with pytest.raises(UserError, match="model 'beta-vae' has no field tc_estimator"):
        set_field(cfg, "model.name", "beta-vae")
    with pytest.raises(UserError, match="unknown config field 'model.latnet_dim'"):
        set_field(cfg, "model.latnet_dim", 3)


# ---- the same run: one rule for resume and sweep ---------------------------------------------------------------
CHANGES = {  # (target, value) -> (the sweep counts it as another run, a resume refuses it)
    ("model.latent_dim", 7): (True, True),
    ("model.name", "beta-vae"): (True, True),
    ("data.subset", 500): (True, True),
    ("train.seed", 4): (True, True),
    ("train.lr", 0.01): (True, False),        # a resume may lower the learning rate
    ("train.batch_size", 8): (True, False),
    ("data.data_dir", "/elsewhere"): (False, False),
    ("train.device", "cuda"): (False, False),
    ("train.steps", 99): (False, False),
    ("train.log_every", 7): (False, False),
    ("model.dataset_size", 5): (False, False),   # filled in from the data
    ("model.image_size", 28): (False, False),
}


@pytest.mark.parametrize("change", list(CHANGES), ids=lambda c: f"{c[0]}={c[1]}")
def test_resume_and_sweep_share_the_same_run_rule(change):
    saved = tiny_config("btcvae" if change[0] == "model.dataset_size" else "vae")
    requested = RunConfig.from_dict(saved.to_dict())
    set_field(requested, *change)
    another_run, refused_on_resume = CHANGES[change]

    fields_differing = [d.field for d in same_run(saved, requested)]
    assert fields_differing[:1] == ([change[0]] if another_run else [])   # a new model also adds its fields
    assert sweep.config_differences(requested, saved) == [
        f"{d.field} is {d.saved!r} there, {d.requested!r} in this sweep" for d in same_run(saved, requested)]
    checkpoint = {"config": saved.to_dict(), "step": 5}
    if refused_on_resume:
        with pytest.raises(UserError, match=f"cannot resume .*{change[0]} is {change[1]!r} but the checkpoint has"):
            trainer.check_resume_compatible(requested, checkpoint, "run")
    else:
        trainer.check_resume_compatible(requested, checkpoint, "run")


def test_a_flat_config_and_its_family_config_are_the_same_run():
    saved = read_config(BUNDLED[0])                  # written in the flat layout
    requested = RunConfig.from_dict(saved.to_dict())    # the family layout
    assert same_run(saved, requested) == []
    requested.model = model_config("vqvae", hidden=saved.model.hidden)
    differences = same_run(saved, requested)
    assert differences[0].field == "model.name"
    assert ("model.num_codes", "<absent>", 64) in differences   # a field only one side has
