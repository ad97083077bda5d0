"""The launcher: bad input exits 2 with one line and no traceback; the commands run."""
import subprocess
import sys

import pytest

from conftest import ROOT


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("args, fragment", [
    (["train", "--set", "model.depth=12"], "model.depth: got 12"),
    (["train", "--set", "train.stepz=3"], "train.stepz: unknown key"),
    (["train", "--set", "optim.lr=fast"], "optim.lr: got 'fast'"),
    (["train", "--preset", "huge"], "--preset: got 'huge'"),
    (["train", "--env", "seqjepa/Nope-v0"], "world.env: unknown world"),
    (["train", "--env", "no_such_module:X-v0"], "cannot import plug-in module"),
    (["train", "--set", "world.options.image_size=3"], "world.options.image_size: got 3"),
    (["train", "--set", "world.options.colour=1"], "world.options.colour: unknown key"),
    (["train", "--env", "seqjepa/Augmentations-v0", "--set", "world.options.source=cifar100"],
     "world.options.root: got ''"),
    (["eval", "--ckpt", "/nonexistent/latest.pt"], "no such file"),
    # refused before training, not after it
    (["train", "--set", "eval.suites=[linear_probe,nope]"], "eval.suites: got 'nope'; allowed: 'all' or"),
    (["train", "--set", "eval.suites=[]"], "eval.suites: got []"),
])
def test_bad_input_exits_2_with_one_line(args, fragment):
    r = run_cli(*args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert fragment in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_help_explains_every_setting():
    r = run_cli("train", "--help")
    assert r.returncode == 0
    for key in ("model.depth", "optim.lr", "train.seq_len", "world.env", "eval.m_val", "model.act_cond"):
        assert key in r.stdout


def test_envs_lists_the_worlds():
    r = run_cli("envs")
    assert r.returncode == 0, r.stderr
    assert "seqjepa/RotatingObjects-v0" in r.stdout
    assert "action" in r.stdout and "rotation_range" in r.stdout


def test_train_and_eval_smoke(tmp_path):
    r = run_cli("train", "--preset", "smoke", "--set", f"train.runs_dir={tmp_path}", "--set", "train.name=cli",
                "--set", f"world.cache_dir={tmp_path / 'cache'}")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "cli"
    for f in ("config.json", "latest.pt", "eval.json", "eval.md"):
        assert (run / f).is_file(), f
    assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())
    assert "linear_probe/z_agg/M=1" in r.stdout and "tensorboard --logdir" in r.stdout
    # eval rebuilds the world from the checkpoint's config and --set: a bad option is named as it was set
    bad = run_cli("eval", "--ckpt", str(run / "latest.pt"), "--set", "world.options.colour=1")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "world.options.colour: unknown key" in bad.stderr, bad.stderr
    # a second run under the same name would overwrite it: refused
    again = run_cli("train", "--preset", "smoke", "--set", f"train.runs_dir={tmp_path}", "--set", "train.name=cli")
    assert again.returncode == 2 and "--resume" in again.stderr
