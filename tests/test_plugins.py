"""A world in the user's own module trains through run.py without any change to the library."""
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

ROOT = Path(__file__).resolve().parents[1]


def test_example_world_passes_check_env():
    import examples.my_world  # noqa: F401  (registers MyWorld-v0)

    env = gym.make("MyWorld-v0")
    with warnings.catch_warnings():
        warnings.simplefilter("error", category=UserWarning)
        check_env(env.unwrapped)


@pytest.mark.slow
def test_plugin_world_trains_and_evaluates(tmp_path):
    cmd = [sys.executable, "run.py", "train", "--preset", "smoke", "--env", "examples.my_world:MyWorld-v0",
           "--set", "world.options={}", "--set", f"train.runs_dir={tmp_path / 'runs'}",
           "--set", f"world.cache_dir={tmp_path / 'cache'}", "--set", "train.progress=off"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (results,) = list((tmp_path / "runs").glob("*/eval.json"))
    data = json.loads(results.read_text())
    assert any("position" in key for key in json.dumps(data).split('"'))  # the world's own factor was probed
