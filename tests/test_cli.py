"""The launcher: bad input exits 2 with one line and no traceback; the commands run and say what they did.

The bad-input corpus is tests/test_bad_input.py (in-process); here the real entry point runs as a subprocess.
"""
import subprocess
import sys

import pytest

import run
from conftest import ROOT


def run_cli(*args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.parametrize("args, fragment", [
    (["train", "--set", "model.depth=12"], "model.depth: got 12"),
    (["train", "--env", "seqjepa/Nope-v0"], "world.env: unknown world"),  # a ValueError the worlds raise
    (["train", "--bogus"], "unrecognized arguments: --bogus"),            # argparse, in one line too
])
def test_bad_input_exits_2_with_one_line(args, fragment):
    r = run_cli(*args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert fragment in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.slow
def test_help_explains_every_setting():
    r = run_cli("train", "--help")
    assert r.returncode == 0
    for key in ("model.depth", "optim.lr", "train.seq_len", "world.env", "eval.m_val", "model.act_cond"):
        assert key in r.stdout
    assert 'preset = "cpu"' in r.stdout and "train.steps = 2000" in r.stdout  # the cpu preset's, not the bases'


@pytest.mark.slow
def test_envs_lists_the_worlds():
    r = run_cli("envs")
    assert r.returncode == 0, r.stderr
    assert "seqjepa/RotatingObjects-v0" in r.stdout
    assert "action" in r.stdout and "rotation_range" in r.stdout


@pytest.mark.slow
def test_train_and_eval_smoke(tmp_path):
    r = run_cli("train", "--preset", "smoke", "--set", f"train.runs_dir={tmp_path}", "--set", "train.name=cli",
                "--set", f"world.cache_dir={tmp_path / 'cache'}")
    assert r.returncode == 0, r.stderr
    run_dir = tmp_path / "cli"
    for f in ("config.json", "latest.pt", "eval.json", "eval.md"):
        assert (run_dir / f).is_file(), f
    assert any(p.name.startswith("events.out.tfevents") for p in run_dir.iterdir())
    assert "linear_probe/z_agg/M=1" in r.stdout and "tensorboard --logdir" in r.stdout
    assert f"results:     {run_dir / 'eval.json'}" in r.stdout
    # eval rebuilds the world from the checkpoint's config and --set: a bad option is named as it was set
    bad = run_cli("eval", "--ckpt", str(run_dir / "latest.pt"), "--set", "world.options.colour=1")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "world.options.colour: unknown key" in bad.stderr, bad.stderr
    # a second run under the same name would overwrite it: refused
    again = run_cli("train", "--preset", "smoke", "--set", f"train.runs_dir={tmp_path}", "--set", "train.name=cli")
    assert again.returncode == 2 and "--resume" in again.stderr


# -- what the launcher says ------------------------------------------------------------------------------------------

def smoke_args(tmp_path, *more):
    return ["train", "--preset", "smoke", "--set", f"train.runs_dir={tmp_path / 'runs'}", "--set", "train.name=r",
            "--set", f"world.cache_dir={tmp_path / 'cache'}", "--set", "train.progress=off", *more]


@pytest.mark.slow
def test_no_results_line_without_evaluation(tmp_path, capsys):
    assert run.main(smoke_args(tmp_path, "--set", "train.steps=2", "--set", "train.eval_after=false")) == 0
    out = capsys.readouterr().out
    assert f"checkpoint:  {tmp_path / 'runs' / 'r' / 'latest.pt'}" in out
    assert "results:" not in out and "eval.json" not in out


def test_no_run_folder_line_for_a_run_that_failed_before_its_folder(tmp_path, capsys):
    assert run.main(smoke_args(tmp_path, "--set", "world.options.colour=1")) == 2
    captured = capsys.readouterr()
    assert "world.options.colour" in captured.err
    assert "run folder" not in captured.out and not (tmp_path / "runs" / "r").exists()


@pytest.mark.slow
def test_interrupt_names_the_run_folder(tmp_path, capsys, monkeypatch):
    import seqjepa.train

    def interrupted(cfg, run_dir, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(seqjepa.train, "train", interrupted)
    assert run.main(smoke_args(tmp_path)) == 130
    err = capsys.readouterr().err
    assert f"interrupted before the first checkpoint of {tmp_path / 'runs' / 'r'}" in err
    monkeypatch.undo()
    assert run.main(smoke_args(tmp_path, "--set", "train.steps=2", "--set", "train.eval_after=false")) == 0
    monkeypatch.setattr(seqjepa.train, "train", interrupted)
    assert run.main(["train", "--resume", str(tmp_path / "runs" / "r")]) == 130
    err = capsys.readouterr().err
    assert f"--resume {tmp_path / 'runs' / 'r'}" in err and "RUN_DIR" not in err


def test_no_user_facing_text_mentions_issues():
    """The strings the launcher and the library print say what to do, not where a change came from."""
    import io
    import tokenize

    for path in [ROOT / "run.py", *sorted((ROOT / "seqjepa").glob("*.py"))]:
        tokens = tokenize.generate_tokens(io.StringIO(path.read_text()).readline)
        text = [t for t in tokens if t.type == tokenize.STRING or t.type == getattr(tokenize, "FSTRING_MIDDLE", -1)]
        assert not [t.start[0] for t in text if "issue" in t.string.lower()], path
