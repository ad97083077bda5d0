import pytest

from seqjepa.config import Config, preset, resume_differences
from seqjepa.options import ConfigError, apply_overrides, from_dict, help_lines, to_dict


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
                                           "num_classes": 20}  # its own world's


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


@pytest.mark.parametrize("override", ["optim.lr=inf", "optim.lr=-Infinity", "optim.weight_decay=NaN",
                                      "model.dropout=inf", "eval.val_fraction=nan", "model.tau_base=inf"])
def test_no_float_field_takes_nan_or_inf(override):
    with pytest.raises(ConfigError, match="allowed: finite float"):
        apply_overrides(preset("smoke"), [override])


def test_world_options_refuse_non_finite_floats_too():
    import envs
    with pytest.raises(ConfigError, match="ior_radius: got inf"):
        envs.make_world("seqjepa/Saccades-v0", ior_radius=float("inf"))


@pytest.mark.parametrize("override, fragment", [
    ("optim.lr=1e30", "<= 10.0"), ("optim.weight_decay=100", "<= 10.0"), ("train.seed=18446744073709551616",
                                                                          "<= 4294967295"),
    ("train.seed=-1", ">= 0"), ("eval.m_val=[]", "at least 1 item"), ("model.width=1000000", "<= 1024"),
])
def test_absurd_values_are_refused_with_their_bound(override, fragment):
    with pytest.raises(ConfigError) as e:
        apply_overrides(preset("smoke"), [override])
    assert fragment in str(e.value)


def test_resume_differences_name_network_and_world_settings_only():
    a, b = preset("smoke"), preset("smoke")
    apply_overrides(b, ["optim.lr=0.01", "train.steps=50", "model.width=16", "world.options.image_size=48"])
    assert resume_differences(a, b) == [("world.options.image_size", 32, 48), ("model.width", 8, 16)]


def test_help_lines_show_a_presets_values():
    lines = help_lines(Config, values=preset("smoke"))
    assert any(line.startswith("  train.steps = 6 ") for line in lines)
    assert any(line.startswith("  train.steps = 1500 ") for line in help_lines(Config))
