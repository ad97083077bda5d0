"""Training: exact resume, determinism, atomic checkpoints, NaN handling, refusal of pickled code."""
import os

import pytest
import torch

from seqjepa import checkpoint
from seqjepa.options import apply_overrides
from seqjepa.train import TrainingDiverged, lr_at, train


def weights(run_dir):
    return checkpoint.load(run_dir / "latest.pt")["model"]


def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
@pytest.mark.parametrize("source", [["world.source=bank"], ["world.source=live", "world.live_chunk=4"]],
                         ids=["bank", "live-chunks"])
def test_resume_is_exact(smoke_cfg, tmp_path, source):
    # Live with chunks of 4 batches: the checkpoint at step 3 falls inside a chunk.
    apply_overrides(smoke_cfg, ["train.steps=6", *source])
    train(smoke_cfg, tmp_path / "straight", log=lambda s: None)
    train(smoke_cfg, tmp_path / "split", stop_after=3, log=lambda s: None)
    assert checkpoint.load(tmp_path / "split" / "latest.pt")["step"] == 3
    train(smoke_cfg, tmp_path / "split", resume=True, log=lambda s: None)
    a, b = checkpoint.load(tmp_path / "straight" / "latest.pt"), checkpoint.load(tmp_path / "split" / "latest.pt")
    assert a["step"] == b["step"] == 6
    assert_same(a["model"], b["model"])
    assert_same(a["probes"], b["probes"])
    assert torch.equal(a["source"]["generator"], b["source"]["generator"])


@pytest.mark.slow
def test_same_seed_same_weights_other_seed_differs(smoke_cfg, tmp_path):
    apply_overrides(smoke_cfg, ["train.steps=3"])
    train(smoke_cfg, tmp_path / "a", log=lambda s: None)
    train(smoke_cfg, tmp_path / "b", log=lambda s: None)
    assert_same(weights(tmp_path / "a"), weights(tmp_path / "b"))
    apply_overrides(smoke_cfg, ["train.seed=1"])
    train(smoke_cfg, tmp_path / "c", log=lambda s: None)
    c = weights(tmp_path / "c")
    assert any(not torch.equal(v, c[k]) for k, v in weights(tmp_path / "a").items() if v.is_floating_point())


def test_lr_schedule_warmup_then_cosine(smoke_cfg):
    apply_overrides(smoke_cfg, ["train.steps=100", "optim.warmup_steps=10", "optim.lr=1e-3",
                                "optim.start_lr=1e-5", "optim.final_lr=1e-5"])
    assert lr_at(0, smoke_cfg) == pytest.approx(1e-5)
    assert lr_at(10, smoke_cfg) == pytest.approx(1e-3)
    assert lr_at(5, smoke_cfg) == pytest.approx((1e-5 + 1e-3) / 2)
    assert lr_at(100, smoke_cfg) == pytest.approx(1e-5)
    assert lr_at(55, smoke_cfg) == pytest.approx((1e-3 + 1e-5) / 2)


@pytest.mark.slow
def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(smoke_cfg, tmp_path, monkeypatch):
    apply_overrides(smoke_cfg, ["train.steps=6", "train.ckpt_every=2", "train.log_every=1"])
    run = tmp_path / "nan"
    train(smoke_cfg, run, stop_after=2, log=lambda s: None)
    good = checkpoint.load(run / "latest.pt")

    from seqjepa.model import SeqJEPA
    original = SeqJEPA.forward

    def poisoned(self, views, actions):
        out = original(self, views, actions)
        out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(SeqJEPA, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match="step 3"):
        train(smoke_cfg, run, resume=True, log=lambda s: None)
    after = checkpoint.load(run / "latest.pt")
    assert after["step"] == 2
    assert_same(good["model"], after["model"])


def test_a_bank_larger_than_free_memory_is_refused_before_rendering(smoke_cfg, tmp_path, monkeypatch):
    from seqjepa import data
    from seqjepa.options import ConfigError
    monkeypatch.setattr(data, "free_memory", lambda device: 1000)  # bytes: smaller than one bank
    with pytest.raises(ConfigError, match=r"world.bank_objects=32, world.bank_views=6: the train view bank needs"):
        train(smoke_cfg, tmp_path / "run", log=lambda s: None)
    assert not (tmp_path / "cache").exists()  # nothing rendered or cached


def test_checkpoint_with_pickled_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": Evil()}, path)
    with pytest.raises(checkpoint.CheckpointError, match="refused"):
        checkpoint.load(path)


def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    checkpoint.save({"model": {"w": torch.ones(3)}, "step": 1}, path)

    def crash(obj, fh, *a, **k):
        fh.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        checkpoint.save({"model": {"w": torch.zeros(3)}, "step": 2}, path)
    monkeypatch.undo()
    assert checkpoint.load(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]
