"""A kill or a divergence never loses a run: kill -9 while checkpointing, then resume bit-identically; a NaN never
replaces the last finite checkpoint, and the run continues from it with a lower learning rate.

The slow parts (a subprocess killed while it checkpoints, training to divergence and back) carry the ``slow``
marker and run by default.
"""
import signal
import subprocess
import sys
import time

import pytest
import torch

import run
from conftest import ROOT
from seqjepa import checkpoint, files
from seqjepa.config import preset
from seqjepa.options import apply_overrides
from seqjepa.train import TrainingDiverged, train

pytestmark = pytest.mark.usefixtures("single_thread")

quiet = lambda msg: None  # noqa: E731


# -- kill -9 while checkpointing, then resume -------------------------------------------------------------------------

def finite(state):
    return checkpoint.first_non_finite({k: state[k] for k in ("model", "probes", "optimizer", "probe_optimizer")}) \
        is None


@pytest.mark.slow
def test_kill_9_while_checkpointing_then_resume_continues_bit_identically(tmp_path):
    runs = tmp_path / "runs"
    cmd = [sys.executable, str(ROOT / "run.py"), "train", "--preset", "smoke", "--set", f"train.runs_dir={runs}",
           "--set", "train.name=k", "--set", "train.ckpt_every=1", "--set", "train.steps=400",
           "--set", "train.log_every=1000", "--set", "train.threads=1", "--set", "train.progress=off",
           "--set", f"world.cache_dir={tmp_path / 'cache'}", "--set", "train.eval_after=false"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = runs / "k"
    deadline = time.time() + 180
    while not (run_dir / "previous.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)  # a few more saves: the kill lands at a random point of one
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # what a kill inside a save leaves, plus a temp file of an earlier dead process
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run_dir / f".latest.pt.tmp{dead.pid}").write_bytes(b"partial")

    state = checkpoint.load(run_dir / "latest.pt")
    assert finite(state) and state["step"] >= 1
    k = state["step"]

    cfg = run.load_run_config(run_dir)
    threads = torch.get_num_threads()
    try:
        train(cfg, run_dir, resume=True, stop_after=k + 2, log=quiet)
        assert not [p.name for p in run_dir.iterdir() if files.TEMP.match(p.name)]
        straight = run.load_run_config(run_dir)
        train(straight, runs / "straight", stop_after=k + 2, log=quiet)
    finally:
        torch.set_num_threads(threads)
    a, b = checkpoint.load(run_dir / "latest.pt"), checkpoint.load(runs / "straight" / "latest.pt")
    assert a["step"] == b["step"] == k + 2
    for key in ("model", "probes"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), f"{key}.{name}"
    for i, s in a["optimizer"]["state"].items():
        for name, t in s.items():
            assert torch.equal(t, b["optimizer"]["state"][i][name]), f"optimizer.{i}.{name}"


# -- divergence never loses the run, and it continues with a sane learning rate ---------------------------------------

@pytest.fixture
def smoke8(tmp_path):
    cfg = preset("smoke")
    apply_overrides(cfg, [f"train.runs_dir={tmp_path / 'runs'}", f"world.cache_dir={tmp_path / 'cache'}",
                          "train.progress=off", "train.steps=8", "train.ckpt_every=2", "train.log_every=1",
                          "train.eval_after=false"])
    return cfg


@pytest.mark.slow
def test_divergence_keeps_a_finite_checkpoint_and_resume_with_a_lower_lr_finishes(smoke8, tmp_path, capsys):
    run_dir = tmp_path / "runs" / "div"
    train(smoke8, run_dir, stop_after=4, log=quiet)
    assert checkpoint.load(run_dir / "previous.pt")["step"] == 2

    # The config refuses inf; set on the dataclass it stands in for an update that overflows. The loss of step 5
    # is computed before that update and is finite: only the check of the weights keeps them out of latest.pt.
    smoke8.optim.lr = float("inf")
    smoke8.train.ckpt_every = 1
    with pytest.raises(TrainingDiverged) as e:
        train(smoke8, run_dir, resume=True, log=quiet)
    msg = str(e.value)
    assert "became NaN/inf at step 5" in msg and "\n" not in msg
    assert f"last good checkpoint is {run_dir / 'latest.pt'} (step 4" in msg
    assert f"--resume {run_dir} --set optim.lr=" in msg
    good = checkpoint.load(run_dir / "latest.pt")
    assert good["step"] == 4 and finite(good)

    assert run.main(["train", "--resume", str(run_dir), "--set", "optim.lr=inf"]) == 2
    assert "optim.lr: got inf" in capsys.readouterr().err
    assert run.main(["train", "--resume", str(run_dir), "--set", "optim.lr=5e-4"]) == 0
    done = checkpoint.load(run_dir / "latest.pt")
    assert done["step"] == 8 and finite(done)
    assert done["config"]["optim"]["lr"] == 5e-4

    # the checkpoint before the last one resumes too
    assert run.main(["train", "--resume", str(run_dir / "previous.pt")]) == 0
    assert "from previous.pt" in capsys.readouterr().out


def test_divergence_before_any_checkpoint_says_there_is_none(smoke8, tmp_path):
    smoke8.optim.lr = float("inf")
    apply_overrides(smoke8, ["optim.warmup_steps=0", "train.ckpt_every=1"])
    run_dir = tmp_path / "runs" / "none"
    with pytest.raises(TrainingDiverged, match="No checkpoint was written before it"):
        train(smoke8, run_dir, log=quiet)
    assert not (run_dir / "latest.pt").exists()


def test_a_nan_loss_through_run_py_is_one_line_naming_the_checkpoint(smoke8, tmp_path, monkeypatch, capsys):
    from seqjepa.model import SeqJEPA
    original = SeqJEPA.forward
    calls = {"n": 0}

    def poisoned(self, views, actions):
        out = original(self, views, actions)
        calls["n"] += self.training
        if calls["n"] > 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(SeqJEPA, "forward", poisoned)
    argv = ["train", "--preset", "smoke", "--set", f"train.runs_dir={tmp_path / 'runs'}", "--set", "train.name=n",
            "--set", f"world.cache_dir={tmp_path / 'cache'}", "--set", "train.ckpt_every=2", "--set",
            "train.log_every=1", "--set", "train.eval_after=false", "--set", "train.progress=off"]
    assert run.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "loss became NaN/inf at step 4" in err, err
    latest = tmp_path / "runs" / "n" / "latest.pt"
    assert f"last good checkpoint is {latest} (step 2" in err
    assert finite(checkpoint.load(latest))
