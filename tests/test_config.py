"""engine.config: each field declared once; the presets per model resolved at construction; validate only checks;
saved configurations round-trip, and those too old to read fail with one line; `ganforge train --help` and
docs/flags.md are generated from the fields and the presets."""
import argparse
import copy
import dataclasses
import json
import re
from pathlib import Path

import pytest

from ganforge.cli import main
from ganforge.commands.flags import flags_markdown
from ganforge.commands.training import add_train_args, config_from_args, parse_train_args
from ganforge.engine import checkpoint as ckpt
from ganforge.engine import config
from ganforge.engine.config import PENALTIES, PRESETS, TrainConfig
from ganforge.engine.recipes import RECIPES, SPEEDRUN_MOMENTUM, recipe_settings

ROOT = Path(__file__).resolve().parent.parent
# (model, vae_backbone) of each preset
MODELS = {"mlp": ("mlp", "mlp"), "dcgan": ("dcgan", "mlp"), "vaegan/mlp": ("vaegan", "mlp"),
          "vaegan/dcgan": ("vaegan", "dcgan")}
# Fields whose None is a real value ("not set"), never filled in.
NOT_SET = {"data_path", "image_size", "channels", "data_memory", "clip", "inception_weights"}


def arguments(*argv):
    """`ganforge train ARGV`'s parsed flags (a --recipe's and a --config file's settings as their defaults)."""
    return parse_train_args(add_train_args(argparse.ArgumentParser()), list(argv))


def parsed(*argv):
    """The TrainConfig `ganforge train ARGV` trains with."""
    return config_from_args(arguments(*argv))


def test_every_field_declares_its_help_group_and_resume_class():
    for f in dataclasses.fields(TrainConfig):
        assert f.metadata["help"].strip(), f.name
        assert f.metadata["group"] in config.GROUPS, f.name
        assert f.metadata["resume"] in config.RESUME_CLASSES, f.name
        assert config.field_type(f.name) in (bool, int, float, str), f.name
    # a None that is a real value says what it means; and these are exactly the fields left None
    declared_not_set = {f.name for f in dataclasses.fields(TrainConfig)
                        if f.default is None and f.name not in config.RESOLVED_FIELDS}
    assert declared_not_set == NOT_SET
    assert all("not set" in config.FIELDS[name].metadata["help"] for name in NOT_SET)
    assert set(config.PRESET_FIELDS) == {name for preset in PRESETS.values() for name in preset}  # all complete


@pytest.mark.parametrize("preset", sorted(MODELS))
@pytest.mark.parametrize("penalty", PENALTIES)
def test_a_config_holds_no_none_for_a_defaulted_field(preset, penalty):
    """Whatever the model and penalty, construction fills every field a preset or rule sets; None is left only
    where None means "not set", and in the reconstruction settings of a model that is not a VAE-GAN."""
    model, backbone = MODELS[preset]
    cfg = TrainConfig(model=model, vae_backbone=backbone, penalty=penalty)
    left_none = {name for name, value in cfg.to_dict().items() if value is None}
    does_not_apply = {"vae_layer", "vae_gamma"} if model != "vaegan" else set()
    assert left_none == NOT_SET | does_not_apply


def test_each_model_trains_with_its_own_preset():
    """--model picks the settings left out: the MLP's speedrun recipe, DCGAN's classic settings, a VAE-GAN its
    backbone's with Adam (0.5, 0.999), R1 gamma 1 and its reconstruction settings."""
    mlp, dcgan = parsed(), parsed("--model", "dcgan")
    assert (mlp.width, mlp.batch_size, mlp.lr_g, mlp.lr_d, mlp.beta1, mlp.beta2, mlp.ema, mlp.ema_rampup,
            mlp.iterations, mlp.penalty_weight, mlp.penalty_every) == (
        32, 512, 1.6e-3, 1.6e-3, 0.0, 0.99, 0.9995, 0.15, 6000, 10.0, 4)
    assert (dcgan.width, dcgan.batch_size, dcgan.lr_g, dcgan.lr_d, dcgan.beta1, dcgan.beta2, dcgan.ema,
            dcgan.ema_rampup, dcgan.iterations, dcgan.penalty_weight, dcgan.penalty_every) == (
        64, 64, 2e-4, 2e-4, 0.5, 0.999, 0.0, 0.0, 12000, 1.0, 4)
    vaegan = parsed("--model", "vaegan")
    assert (vaegan.width, vaegan.batch_size, vaegan.beta1, vaegan.beta2, vaegan.iterations, vaegan.penalty_weight,
            vaegan.vae_layer, vaegan.vae_gamma) == (32, 512, 0.5, 0.999, 8000, 1.0, 2, 0.01)
    on_dcgan = parsed("--model", "vaegan", "--vae-backbone", "dcgan")
    assert (on_dcgan.width, on_dcgan.batch_size, on_dcgan.iterations, on_dcgan.vae_layer, on_dcgan.vae_gamma) == (
        64, 64, 12000, 2, 2e-4)
    for label, (model, backbone) in MODELS.items():  # and every preset field comes from its preset
        cfg = TrainConfig(model=model, vae_backbone=backbone)
        for name, value in PRESETS[label].items():
            assert getattr(cfg, name) == (value["r1"] if name in config.PER_PENALTY else value), (label, name)


def test_the_penalty_picks_its_weight_and_interval():
    weights_and_intervals = {penalty: (TrainConfig(penalty=penalty).penalty_weight,
                                       TrainConfig(penalty=penalty).penalty_every) for penalty in PENALTIES}
    assert weights_and_intervals == {"none": (0.0, 1), "wgan-gp": (10.0, 1), "r1": (10.0, 4), "r2": (1.0, 1),
                                     "r1+r2": (1.0, 1)}
    assert TrainConfig(model="dcgan").penalty_weight == TrainConfig(model="vaegan").penalty_weight == 1.0
    assert TrainConfig(model="dcgan", penalty="wgan-gp").penalty_weight == 10.0
    never = TrainConfig(penalty="none", n_critic=3).validate()
    assert not any(p for i in range(8) for p in never.penalized_d_steps(i))
    lazy = TrainConfig(n_critic=3)
    assert [p for i in range(3) for p in lazy.penalized_d_steps(i)] == [i % 4 == 0 for i in range(9)]


def test_given_values_win_and_the_rules_follow_them():
    assert TrainConfig(width=48).width == 48
    assert (TrainConfig(penalty_weight=0.5, beta1=0.9).penalty_weight, TrainConfig(beta1=0.9).beta1) == (0.5, 0.9)
    assert TrainConfig(batch_size=64).lr_g == TrainConfig().lr_g  # no hidden rescaling
    assert TrainConfig(model="dcgan", width=None).width == 64  # None: take the preset
    off = TrainConfig(ema=0.0)
    assert (off.ema, off.ema_rampup) == (0.0, 0.0)  # an EMA turned off has no ramp-up
    assert TrainConfig(model="dcgan", ema=0.999).ema_rampup == 0.0  # DCGAN's preset ramp-up
    assert TrainConfig().fid_every == config.FID_EVERY_SCORED > 0
    assert TrainConfig(fid_samples=0).fid_every == 0  # not scored: no curve either
    assert TrainConfig(dataset="ring8").fid_every == 0
    assert TrainConfig(fid_every=7).fid_every == 7
    with pytest.raises(ValueError, match="--ema-rampup must be >= 0 and needs --ema > 0"):
        TrainConfig(ema=0.0, ema_rampup=0.1).validate()
    for bad in ({"beta1": 1.0}, {"beta2": -0.1}):
        with pytest.raises(ValueError, match="--beta"):
            TrainConfig(**bad).validate()
    with pytest.raises(ValueError, match="--penalty-weight must be > 0"):
        TrainConfig(penalty_weight=0.0).validate()


@pytest.mark.parametrize("argv", [[], ["--model", "dcgan"], ["--model", "vaegan", "--vae-backbone", "dcgan"],
                                  ["--recipe", "textbook"], ["--penalty", "none", "--ema", "0"],
                                  ["--model", "resnet"], ["--batch-size", "0"]])
def test_validate_only_checks(argv):
    cfg = TrainConfig(**{name: getattr(arguments(*argv), name) for name in config.FIELDS})
    before = copy.deepcopy(cfg.to_dict())
    try:
        assert cfg.validate() is cfg
    except ValueError:
        pass
    assert cfg.to_dict() == before


def test_a_preset_field_set_to_none_later_is_refused():
    cfg = TrainConfig()
    cfg.width = None
    with pytest.raises(ValueError, match="--width must be set"):
        cfg.validate()


def test_recipes_keep_their_settings_and_each_has_a_description():
    for name, recipe in RECIPES.items():
        assert recipe.description.strip() and "\n" not in recipe.description, name
        TrainConfig(**recipe.settings).validate()
    for name in ("mlp-r1", "speedrun-momentum", "default-2026-12-02"):  # the last: speedrun-momentum's old name
        old = TrainConfig(**recipe_settings(name))
        assert (old.beta1, old.beta2, old.penalty_weight) == (0.5, 0.999, 1.0), name
    momentum = TrainConfig(**SPEEDRUN_MOMENTUM)
    assert (momentum.width, momentum.batch_size, momentum.iterations, momentum.ema) == (32, 512, 8000, 0.9995)
    textbook = parsed("--recipe", "textbook")
    assert (textbook.penalty, textbook.width, textbook.batch_size, textbook.penalty_weight) == ("none", 64, 64, 0.0)
    assert parsed("--recipe", "textbook", "--penalty", "r1").penalty_weight == 10.0  # the MLP's gamma, as before
    with pytest.raises(ValueError, match="unknown recipe 'fastest'"):
        recipe_settings("fastest")


def test_the_api_picks_the_presets_of_the_overrides(monkeypatch):
    from ganforge.engine import api, trainer

    seen = []
    monkeypatch.setattr(trainer, "train", lambda cfg, **kwargs: seen.append(cfg))
    api.train(model="dcgan", out="unused")
    api.train(TrainConfig(width=8), iterations=5)
    assert (seen[0].batch_size, seen[0].width, seen[0].beta1) == (64, 64, 0.5)
    assert (seen[1].width, seen[1].iterations, seen[1].batch_size) == (8, 5, 512)


def test_the_config_json_of_a_run_round_trips(tmp_path):
    """What a run records is what it trained with: every defaulted field set (no null penalty interval), read
    back by from_dict and by --config to the same configuration."""
    out = tmp_path / "run"
    assert main(["train", "--model", "dcgan", "--width", "4", "--batch-size", "8", "--iterations", "2",
                 "--fid-samples", "0", "--kernels", "ref", "--out", str(out), "--no-progress"]) == 0
    written = json.loads((out / "config.json").read_text())
    assert {name for name, value in written.items() if value is None} == NOT_SET | {"vae_layer", "vae_gamma"}
    assert (written["penalty_weight"], written["penalty_every"], written["lr_g"]) == (1.0, 4, 2e-4)
    assert TrainConfig.from_dict(written).to_dict() == written
    assert parsed("--config", str(out / "config.json")).to_dict() == written


def test_saved_configurations_too_old_to_read_fail_with_one_line():
    """A configuration without a field this version cannot fill in (written before it existed, or an R1 gamma
    saved as null when null meant gamma 1) is refused, naming the file; what this version writes reads back."""
    saved = TrainConfig().to_dict()
    assert TrainConfig.from_dict(saved) == TrainConfig() and TrainConfig.from_dict(saved).penalty_weight == 10.0
    steps = {**{k: v for k, v in saved.items() if k != "iterations"}, "steps": 100}
    no_width = {k: v for k, v in saved.items() if k != "width"}
    null_gamma = {**saved, "penalty_weight": None}
    for values, lacking in ((steps, "iterations"), (no_width, "width"), (null_gamma, "penalty_weight")):
        with pytest.raises(ValueError, match=rf"old\.pt was written by an older ganforge .* lacks {lacking}") as info:
            TrainConfig.from_dict(values, source="old.pt")
        assert "\n" not in str(info.value)
        with pytest.raises(ValueError, match=r"old\.pt was written by an older ganforge"):
            ckpt.check_same_architecture({"config": values, "data_shape": [1, 28, 28]}, TrainConfig(), "old.pt")
    # what the previous version wrote for a DCGAN (the penalty's weight and interval left null) is still read
    dcgan = {**TrainConfig(model="dcgan").to_dict(), "penalty_weight": None, "penalty_every": None}
    assert (TrainConfig.from_dict(dcgan).penalty_weight, TrainConfig.from_dict(dcgan).penalty_every) == (1.0, 4)
    assert ckpt.hyperparameter_changes(dcgan, TrainConfig(model="dcgan")) == {}
    assert TrainConfig.from_dict({k: v for k, v in saved.items() if k != "spectral_norm"}) == TrainConfig()


def test_resume_compares_each_field_by_its_class():
    """Architecture fields refuse a resume, tunable ones are applied and reported, the others are not compared."""
    assert set(ckpt.ARCHITECTURE_FIELDS) == {"model", "dataset", "image_size", "channels", "conditional",
                                             "condition_on", "z_dim", "width", "optimizer", "penalty",
                                             "spectral_norm", "vae_backbone"}
    saved = TrainConfig().to_dict()
    state = {"config": saved, "data_shape": [1, 28, 28]}
    refused = TrainConfig(width=48, z_dim=8)
    with pytest.raises(ValueError, match="--z-dim 100 in the checkpoint, 8 now; --width 32 in the checkpoint"):
        ckpt.check_same_architecture(state, refused, "old.pt")
    changed = TrainConfig(lr_g=0.05, penalty_every=2, iterations=9, seed=3)
    ckpt.check_same_architecture(state, changed, "old.pt")
    assert ckpt.hyperparameter_changes(saved, changed) == {"lr_g": (1.6e-3, 0.05), "penalty_every": (4, 2)}
    assert set(ckpt.TUNABLE_FIELDS).isdisjoint(ckpt.ARCHITECTURE_FIELDS)


def test_config_files_read_the_older_name_of_a_field(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"steps": 6, "width": 16}')
    assert config.load_config_file(path) == {"iterations": 6, "width": 16}
    assert parsed("--steps", "7").iterations == 7


def _help_text(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare words


def test_help_shows_each_models_default_from_the_presets(capsys, monkeypatch):
    text = _help_text(capsys)
    for group in config.GROUPS:
        assert f" {group}: " in text
    for name in RECIPES:
        assert f"{name}: {' '.join(RECIPES[name].description.split())}" in text
    assert "bf16 on CUDA and on CPUs with AMX, else fp32" in text
    batch = re.search(r"--batch-size BATCH_SIZE images per iteration \(default: ([^)]*)\)", text).group(1)
    assert batch == ", ".join(f"{label} {preset['batch_size']}" for label, preset in PRESETS.items())
    assert "--penalty-weight PENALTY_WEIGHT lambda of WGAN-GP, gamma of R1 / R2 (default: wgan-gp 10; r1: mlp 10, " \
           "dcgan 1, vaegan/mlp 1, vaegan/dcgan 1; r2 1; r1+r2 1)" in text
    monkeypatch.setitem(PRESETS, "dcgan", {**PRESETS["dcgan"], "batch_size": 96})  # read, not typed
    assert "dcgan 96" in _help_text(capsys)


def test_docs_flags_md_is_what_the_generator_makes_now():
    page = ROOT / "docs" / "flags.md"
    assert page.is_file() and page.read_text(encoding="utf-8") == flags_markdown(), \
        "docs/flags.md is out of date: run `ganforge flags --write docs/flags.md`"


def test_the_flags_command_writes_one_row_per_field(tmp_path, capsys):
    out = tmp_path / "flags.md"
    assert main(["flags", "--write", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert text == flags_markdown() and text.startswith("# `ganforge train` flags\n\nGenerated by `ganforge flags")
    rows = [line for line in text.splitlines() if line.startswith("| `--")]
    assert len(rows) == len(config.FIELDS)
    assert "| `--width` | int | mlp 32, dcgan 64, vaegan/mlp 32, vaegan/dcgan 64 |" in text
    assert "| `--progress`, `--no-progress` | switch | on |" in text
    assert main(["flags", "--write", str(tmp_path / "missing" / "flags.md")]) == 2
