import pytest

from seqjepa.config import Config, ConfigError, apply_overrides, from_dict, help_lines, preset, to_dict


@pytest.mark.parametrize("name", ["smoke", "cpu", "paper"])
def test_presets_are_valid_and_round_trip(name):
    cfg = preset(name)
    assert cfg.preset == name
    assert to_dict(from_dict(Config, to_dict(cfg))) == to_dict(cfg)


def test_overrides_are_typed():
    cfg = preset("smoke")
    apply_overrides(cfg, ["model.depth=18", "optim.lr=0.01", "model.ema=false", "eval.m_val=1,3",
                          "world.options.image_size=48"])
    assert cfg.model.depth == 18 and cfg.optim.lr == 0.01 and cfg.model.ema is False
    assert cfg.eval.m_val == [1, 3]
    assert cfg.world.options["image_size"] == 48
    for text in ("[linear_probe, knn]", "linear_probe,knn", '["linear_probe","knn"]'):
        apply_overrides(cfg, [f"eval.suites={text}"])
        assert cfg.eval.suites == ["linear_probe", "knn"]


def test_preset_for_another_world_keeps_only_its_options():
    cfg = preset("cpu", "seqjepa/Augmentations-v0")
    assert cfg.world.env == "seqjepa/Augmentations-v0" and cfg.world.options == {"image_size": 32}
    assert preset("cpu", "seqjepa/Saccades-v0").world.options == {"scene_size": 64}
    assert preset("cpu").world.options == {"image_size": 32, "rotation_range": 0.785, "pose_paint": 1.0,
                                           "num_categories": 20}  # its own world's


@pytest.mark.parametrize("override, fragment", [
    ("model.nope=1", "model.nope: unknown key"),
    ("nope.depth=1", "nope: unknown key"),
    ("model.depth=abc", "model.depth: got 'abc'"),
    ("model.depth=12", "one of 10, 18, 34"),
    ("optim.lr=-1", "optim.lr: got -1"),
    ("optim.lr=0", "> 0.0"),
    ("train.batch_size=1", ">= 2"),
    ("model.dropout=1.5", "<= 1.0"),
    ("model.ema=maybe", "model.ema: got 'maybe'"),
    ("train.steps=1.5", "train.steps"),
    ("model=3", "model: is a section"),
    ("model.depth", "expected section.key=value"),
])
def test_bad_values_name_the_field_and_the_allowed_values(override, fragment):
    cfg = preset("smoke")
    with pytest.raises(ConfigError) as e:
        apply_overrides(cfg, [override])
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="--preset: got 'huge'"):
        preset("huge")


def test_every_field_has_help():
    for line in help_lines(Config):
        assert line.split("]", 1)[1].strip(), line
