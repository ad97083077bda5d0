"""One registry convention (worlds, methods, agents, suites) and world options named alike across worlds.

Every set of named things a setting picks from is a ``seqjepa.registry.Registry``: an unknown name is one line that
names the setting and what is allowed, and ``run.py --help`` lists the names from the registries themselves. World
options name one idea alike in every world; the names they had before still load (configs and checkpoints written
with them), and giving an old and a new name at once is an error.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import envs
import run
import seqjepa.config
from agents import AGENTS, make_agent
from eval.suite import SUITE_NAMES, SUITES, resolve_suites
from seqjepa.baselines import METHODS, method_class
from seqjepa.config import Config, preset
from seqjepa.options import ConfigError, apply_overrides, from_dict, to_dict
from seqjepa.registry import Registry

# -- the registry ----------------------------------------------------------------------------------------------------


def test_registry_reads_like_a_mapping_in_registration_order():
    reg = Registry("colour", "paint.colour")
    assert reg.register("red", 1) == 1
    reg.register("blue", 2)
    reg.register("green", 3)
    assert list(reg) == ["red", "blue", "green"] == list(reg.names())
    assert reg["blue"] == 2 and "blue" in reg and "grey" not in reg and len(reg) == 3
    assert dict(reg.items()) == {"red": 1, "blue": 2, "green": 3} and reg.get("grey") is None
    reg.register("blue", 20)  # a name registered again keeps its place
    assert reg.names() == ("red", "blue", "green") and reg["blue"] == 20
    assert ["x"] not in reg  # an unhashable value read from a config is just not a name


def test_an_unknown_name_is_one_line_naming_the_setting_and_the_allowed_names():
    reg = Registry("colour", "paint.colour", {"red": 1, "blue": 2})
    with pytest.raises(ConfigError) as e:
        reg["grey"]
    assert str(e.value) == "paint.colour: unknown colour 'grey'; allowed: red, blue"
    with pytest.raises(ConfigError, match=r"^--colour: unknown colour \['x'\]; allowed: red, blue$"):
        reg.lookup(["x"], "--colour")
    assert isinstance(e.value, ValueError)  # ConfigError, which run.py reports as exit 2


# Each registry, the setting that picks from it, and how the code that uses it looks a name up.
REGISTRIES = {
    "world": (envs.WORLDS, "world.env", envs.world_class),
    "method": (METHODS, "model.method", method_class),
    "agent": (AGENTS, "world.agent", make_agent),
    "suite": (SUITES, "eval.suites", lambda name: resolve_suites([name], "eval.suites")),
}


@pytest.mark.parametrize("kind", REGISTRIES)
def test_every_registry_names_its_setting_and_its_names(kind):
    reg, setting, lookup = REGISTRIES[kind]
    assert isinstance(reg, Registry) and reg.kind == kind and reg.setting == setting and len(reg) > 0
    with pytest.raises(ConfigError) as e:
        lookup("nope")
    message = str(e.value)
    assert message.startswith(f"{setting}: unknown {kind} 'nope'; allowed: ")
    assert message.endswith(", ".join(reg.names())) and "\n" not in message
    first = reg.names()[0]
    assert lookup(first) is not None  # a registered name resolves


def test_the_public_names_are_the_registries():
    assert SUITE_NAMES == SUITES.names() and resolve_suites("all") == list(SUITE_NAMES)
    assert METHODS.names()[0] == "seqjepa" and method_class("byol") is METHODS["byol"]
    assert type(make_agent("sweep")) is AGENTS["sweep"]
    assert envs.world_class("seqjepa/Saccades-v0") == ("seqjepa/Saccades-v0", envs.Saccades)
    assert "seqjepa/RotatingObjects-v0" in envs.WORLDS


def test_the_config_layer_types_no_list_of_methods():
    """The config sits below the networks: it holds no copy of their names to keep in step."""
    assert not hasattr(seqjepa.config, "METHODS")
    cfg = preset("smoke")
    apply_overrides(cfg, ["model.method=nope"])  # checked where the methods are known
    with pytest.raises(ConfigError, match="^model.method: unknown method 'nope'"):
        run.build_config(run.parser().parse_args(["train", "--preset", "smoke", "--set", "model.method=nope"]))


@pytest.mark.parametrize("argv", [["train", "--set", "model.method=nope"], ["train", "--method", "nope"],
                                  ["train", "--preset", "smoke", "--agent", "nope"],
                                  ["train", "--env", "seqjepa/Nope-v0"],
                                  ["eval", "--ckpt", "nowhere.pt", "--suite", "nope"]])
def test_run_py_exits_2_with_one_line_on_an_unknown_name(argv, capsys, tmp_path):
    code = run.main([*argv, "--set", f"train.runs_dir={tmp_path}"] if argv[0] == "train" else argv)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "unknown" in err and "allowed: " in err and "Traceback" not in err


def test_help_lists_the_registered_names(capsys):
    with pytest.raises(SystemExit) as e:
        run.main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for setting, reg in (("world.env", envs.WORLDS), ("world.agent", AGENTS), ("model.method", METHODS),
                         ("eval.suites", SUITES)):
        line = next(line for line in out.splitlines() if line.startswith(f"  {setting} = "))
        assert reg.describe() in line, (setting, line)


# -- world options: one name per idea, old names still load -------------------------------------------------------

WORLD_IDS = list(envs.WORLDS)
# Names that meant an idea another option now names in every world (the view side, the classes, the data seed).
OLD_NAMES = {"glimpse": "image_size", "num_categories": "num_classes", "shape_seed": "data_seed",
             "image_seed": "data_seed", "seed": "data_seed"}
# A small, fast instance of each procedural world, in its current option names.
SMALL = {"seqjepa/RotatingObjects-v0": dict(image_size=16, num_classes=2, instances=3, data_seed=3),
         "seqjepa/Augmentations-v0": dict(image_size=16, num_classes=2, per_class=2, data_seed=3),
         "seqjepa/Saccades-v0": dict(scene_size=32, image_size=8, num_classes=2, per_class=2, data_seed=3)}


def fields(env_id: str) -> set[str]:
    return {f.name for f in dataclasses.fields(envs.WORLDS[env_id].Options)}


@pytest.mark.parametrize("env_id", WORLD_IDS)
def test_every_world_names_its_options_alike(env_id):
    cls = envs.WORLDS[env_id]
    assert "image_size" in fields(env_id), f"{env_id}: the view side is image_size in every world"
    assert not fields(env_id) & set(OLD_NAMES), f"{env_id}: an idea named as no other world names it"
    assert set(cls.RENAMED) <= set(OLD_NAMES) and set(cls.RENAMED.values()) <= fields(env_id)
    if env_id in SMALL:  # the procedural worlds choose their class count
        world = cls(**SMALL[env_id])
        assert world.num_classes == 2 and world.image_size == SMALL[env_id]["image_size"]
        assert world.render(world.reset(1, torch.Generator().manual_seed(0))).shape[-1] == world.image_size


def renamed_cases():
    return [(env_id, old, new) for env_id in WORLD_IDS for old, new in envs.WORLDS[env_id].RENAMED.items()]


@pytest.mark.parametrize("env_id, old, new", renamed_cases())
def test_an_old_option_name_loads_as_the_new_one(env_id, old, new):
    cls = envs.WORLDS[env_id]
    small = SMALL[env_id]
    value = small[new]
    with_old = {**{k: v for k, v in small.items() if k != new}, old: value}
    a, b = cls(**small), cls(**with_old)
    assert a.options == b.options and getattr(b.options, new) == value
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(a.render(a.reset(3, g1)), b.render(b.reset(3, g2)))  # the same world, the same views
    with pytest.raises(ConfigError) as e:
        cls(**{**small, old: value})
    assert str(e.value) == (f"{old}: got {value!r} with {new}={value!r}; allowed: one of them ({old} is {new}'s "
                            f"old name)")


@pytest.mark.parametrize("env_id", list(SMALL))
def test_a_world_option_the_world_does_not_take_names_the_allowed_ones(env_id):
    cls = envs.WORLDS[env_id]
    other = next(old for old in OLD_NAMES if old not in cls.RENAMED)  # another world's old name is not this one's
    for name in ("colour", other):
        with pytest.raises(ConfigError) as e:
            cls(**{**SMALL[env_id], name: 1})
        assert str(e.value) == f"{name}: unknown key; allowed keys: {', '.join(sorted(fields(env_id)))}"


def test_a_config_written_with_the_old_names_still_trains_the_same_world(tmp_path):
    """runs/*/config.json and a checkpoint's config hold the options as they were written: they load as they were."""
    from seqjepa.data import build_world

    old = to_dict(preset("smoke"))
    old["world"]["options"] = {"image_size": 16, "num_categories": 2, "instances": 3, "shape_seed": 1}
    cfg = from_dict(Config, json.loads(json.dumps(old)))
    world = build_world(cfg, torch.device("cpu"), "train")
    assert world.options == envs.RotatingObjects.Options(image_size=16, num_classes=2, instances=3, data_seed=1)
    cfg.world.options["num_classes"] = 2
    with pytest.raises(ConfigError, match=r"^world\.options\.num_categories: got 2 with num_classes=2; allowed: one"):
        build_world(cfg, torch.device("cpu"), "train")


def test_old_names_reach_gym_make_and_preview():
    import gymnasium as gym

    from envs.preview import world_options

    a = gym.make("seqjepa/Saccades-v0", scene_size=32, glimpse=8, num_classes=2, per_class=2)
    assert a.unwrapped.world.image_size == 8 and a.observation_space.shape == (8, 8, 3)
    assert world_options(envs.Saccades, ["world.options.glimpse=8"]) == {"image_size": 8}
    with pytest.raises(ConfigError, match=r"^world\.options\.glimpse: got '8' with image_size='8'"):
        world_options(envs.Saccades, ["world.options.glimpse=8", "world.options.image_size=8"])
