"""Experiment configs: presets load, typos are errors naming the key, overrides, schedule."""

import dataclasses
import math

import pytest

from selfocc_core.config_io import ConfigError, to_dict
from selfocc_core.training.config import (
    ExperimentConfig,
    OptimConfig,
    experiment_config_from_dict,
    load_experiment_config,
    preset_names,
)
from selfocc_core.training.schedule import lr_factor


@pytest.mark.parametrize("name", ["nuscenes_occ", "kitti_occ", "nuscenes_bev_occ", "tiny_synth", "tiny_synth_hires"])
def test_presets_load_and_round_trip(name):
    cfg = load_experiment_config(name)
    assert isinstance(cfg, ExperimentConfig)
    assert experiment_config_from_dict(to_dict(cfg)) == cfg
    assert name in preset_names()


def test_paper_settings_in_nuscenes_preset():
    cfg = load_experiment_config("nuscenes_occ")
    assert (cfg.data.image_height, cfg.data.image_width) == (384, 800)
    assert cfg.model.backbone_depth == 50 and cfg.model.embed_dim == 96 and cfg.model.num_layers == 4
    assert cfg.loss.reprojection_weight == 1.0 and cfg.loss.rgb_weight == 0.1 and cfg.loss.eikonal_weight == 0.1
    # the official NeuS settings (huang-yh/SelfOcc): 256 samples per ray, variance 0.1 at init
    assert cfg.model.num_samples == 256 and cfg.model.init_variance == 0.1
    assert load_experiment_config("nuscenes_bev_occ").model.lifter == "bev"


def test_typo_in_yaml_names_key_and_file(tmp_path):
    p = tmp_path / "exp.yaml"
    p.write_text("loss:\n  reprojection_wieght: 1.0\n")
    with pytest.raises(ConfigError, match=r"loss\.reprojection_wieght") as e:
        load_experiment_config(str(p))
    assert str(p) in str(e.value)


def test_overrides_and_their_typos():
    cfg = load_experiment_config("tiny_synth", ["optim.lr=3e-4", "train.steps=7", "loss.automask=false"])
    assert cfg.optim.lr == 3e-4 and cfg.train.steps == 7 and cfg.loss.automask is False
    # words that Python's float() would read ("infinity", "nan") stay words
    cfg = load_experiment_config("tiny_synth", ["loss.background=infinity", "optim.lr=2E+1", "loss.ssim_alpha=.5"])
    assert cfg.loss.background == "infinity" and cfg.optim.lr == 20.0 and cfg.loss.ssim_alpha == 0.5
    with pytest.raises(ConfigError, match="optim.lr"):
        load_experiment_config("tiny_synth", ["optim.lr=nan"])
    with pytest.raises(ConfigError, match=r"optim\.lrr"):
        load_experiment_config("tiny_synth", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="train.steps"):
        load_experiment_config("tiny_synth", ["train.steps=many"])
    with pytest.raises(ConfigError, match="unknown config preset 'tiny_synt'"):
        load_experiment_config("tiny_synt")
    with pytest.raises(ConfigError, match="not key=value"):
        load_experiment_config("tiny_synth", ["optim.lr"])


def test_schedule_warmup_step_and_cosine():
    c = OptimConfig(lr=1.0, warmup_steps=10, warmup_init_factor=0.0, schedule="step", step_milestones=[0.5, 0.75],
                    step_gamma=0.1)
    assert lr_factor(c, 0, 100) == 0.0
    assert math.isclose(lr_factor(c, 5, 100), 0.5)
    assert lr_factor(c, 10, 100) == 1.0 and lr_factor(c, 49, 100) == 1.0
    assert math.isclose(lr_factor(c, 50, 100), 0.1) and math.isclose(lr_factor(c, 75, 100), 0.01)
    cos = OptimConfig(lr=1.0, warmup_steps=10, schedule="cosine", min_lr_factor=0.1)
    assert math.isclose(lr_factor(cos, 10, 110), 1.0)
    assert math.isclose(lr_factor(cos, 60, 110), 0.55)  # half way: 0.1 + 0.9 * 0.5
    assert math.isclose(lr_factor(cos, 110, 110), 0.1)
    with pytest.raises(ValueError, match="step_milestones"):
        OptimConfig(step_milestones=[1.5])


def test_training_recipes_load():
    from pathlib import Path

    recipes = sorted((Path(__file__).resolve().parents[1] / "training").glob("*.yaml"))
    assert recipes, "training/*.yaml recipes missing"
    for p in recipes:
        assert isinstance(load_experiment_config(str(p)), ExperimentConfig)


def test_cli_reports_bad_config_and_data(tmp_path, capsys):
    from selfocc_core.cli import main

    rc = main(["train", "--config", "tiny_synth", "--data", "synthetic", "--out", str(tmp_path / "r"),
               "--set", "optim.lrr=1"])
    assert rc == 2 and "optim.lrr" in capsys.readouterr().err
    rc = main(["train", "--config", "tiny_synth", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "r")])
    assert rc == 2 and "does not exist" in capsys.readouterr().err
    rc = main(["train", "--config", "tiny_synth", "--data", "synthetic:seeds=1,frames=4,colour=red",
               "--out", str(tmp_path / "r")])
    assert rc == 2 and "colour" in capsys.readouterr().err


def test_tiny_synth_hires_is_tiny_synth_with_larger_loss_images():
    """The same network (same weights shape and input size) as tiny_synth; only the images the
    losses see, the ray stride on them and the background differ."""
    a, b = load_experiment_config("tiny_synth"), load_experiment_config("tiny_synth_hires")
    assert (b.model.input_height, b.model.input_width) == (a.data.image_height, a.data.image_width)
    assert (b.data.image_height, b.data.image_width) == (4 * a.data.image_height, 4 * a.data.image_width)
    assert b.model.ray_stride == 2 * a.model.ray_stride  # 4x the rays per camera
    same = dataclasses.replace(b.model, input_height=0, input_width=0, ray_stride=a.model.ray_stride)
    assert same == a.model
