"""Scale: torchrun with 2 processes (gloo, CPU) against one process with the same global batch; the distributed
helpers; and what a CPU can check of the GPU path and the throughput benchmark.

The 2-process run uses ``train.ddp_data=shared`` (each rank draws the whole global batch from the single-process
stream and keeps its half), ``train.sync_batchnorm=true`` (BatchNorm statistics over the global batch, as one
process computes them) and ``model.dropout=0`` (dropout masks come from per-rank RNGs), in fp32. Then the two runs
see the same data and compute the same loss, and differ only by floating-point summation order: gradients are
averaged over ranks instead of summed over one batch, BatchNorm statistics are all-reduced sums, and the
processes use 1 thread instead of 2. After 4 AdamW steps (peak lr 1e-3) every parameter and buffer agrees to
TOL (absolute; measured: 4e-7) except the ZERO_GRADIENT ones, whose gradient is zero in exact arithmetic, so that
Adam's normalisation turns round-off into steps of ±lr: the aggregator's final LayerNorm bias shifts every z_agg by
the same vector, which the predictor's bias-free Linear followed by BatchNorm removes (measured: 4e-4, the
parameter itself is ~2e-4), and the running mean of that BatchNorm, which follows the shift (2e-5).
"""
import copy
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from seqjepa import checkpoint
from seqjepa import distributed as ddp
from seqjepa.options import apply_overrides
from seqjepa.data import resume_streams
from seqjepa.train import train

TOL = 1e-5  # max |Δ| of any parameter or buffer after 4 steps, ZERO_GRADIENT aside (see the module docstring)
TOL_PROBES = 1e-4  # the online probes read z_agg, which carries the LayerNorm-bias difference (measured: 7e-6)
ZERO_GRADIENT = {"aggregator.norm.bias", "predictor.1.running_mean"}
SAME_DATA = ["train.steps=4", "train.ddp_data=shared", "train.sync_batchnorm=true", "model.dropout=0",
             "train.bf16=off", "train.channels_last=off", "train.eval_after=false", "train.ckpt_every=2"]


def quiet_train(*args, **kwargs) -> dict:
    """train() with no console output (and, as every direct call, without run.py's TensorBoard inspection)."""
    return train(*args, log=lambda s: None, **kwargs)


def max_diff(a: dict, b: dict, skip: set = frozenset()) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a
               if a[k].is_floating_point() and k not in skip)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One 2-process torchrun and one single-process run of the same 4 steps (shared by the tests below)."""
    tmp = tmp_path_factory.mktemp("ddp")
    sets = [f"train.runs_dir={tmp}", f"world.cache_dir={tmp / 'cache'}", "train.progress=off", *SAME_DATA]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "run.py"), "train", "--preset", "smoke", "--set", "train.name=two"]
    for s in sets:
        cmd += ["--set", s]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    from seqjepa.config import preset
    cfg = preset("smoke")
    apply_overrides(cfg, sets)
    quiet_train(cfg, tmp / "one")
    return tmp, cfg, r.stdout


@pytest.mark.slow
def test_ranks_hold_identical_parameters(runs):
    tmp, _, stdout = runs
    ckpt = checkpoint.load(tmp / "two" / "latest.pt")
    assert ckpt["step"] == 4 and len(ckpt["ranks"]) == 2
    digests = [r["params"] for r in ckpt["ranks"]]
    assert digests[0] == digests[1], digests  # bitwise: every rank applied the same averaged gradients
    assert stdout.count("run folder:") == 2  # rank 0 alone prints (once before, once after training)


def test_two_processes_match_one(runs):
    tmp, _, _ = runs
    two, one = checkpoint.load(tmp / "two" / "latest.pt"), checkpoint.load(tmp / "one" / "latest.pt")
    d_model, d_probes = max_diff(two["model"], one["model"], ZERO_GRADIENT), max_diff(two["probes"], one["probes"])
    print(f"max |param(2 procs) - param(1 proc)| after 4 steps: model {d_model:.2e}, probes {d_probes:.2e}")
    assert d_model < TOL and d_probes < TOL_PROBES
    # The shared stream: both runs end at the same generator state.
    assert torch.equal(two["source"]["generator"], one["source"]["generator"])


def test_one_process_resumes_a_two_process_checkpoint(runs):
    """With ddp_data=shared the resumed single process continues the very stream the 2 processes drew."""
    from envs import SequenceSource
    from seqjepa.data import build_bank, build_world

    tmp, cfg, _ = runs
    shutil.copytree(tmp / "two", tmp / "two_then_one")
    cfg = copy.deepcopy(cfg)
    apply_overrides(cfg, ["train.steps=6"])
    logs = []
    summary = train(cfg, tmp / "two_then_one", resume=True, log=logs.append)
    assert summary["steps_run"] == 2 and any("resumed" in line for line in logs)
    assert not any("re-seeded" in line for line in logs)
    ckpt = checkpoint.load(tmp / "two_then_one" / "latest.pt")
    assert ckpt["step"] == 6 and "ranks" not in ckpt
    world = build_world(cfg, torch.device("cpu"), "train")
    straight = SequenceSource(world, seq_len=cfg.train.seq_len, batch_size=cfg.train.batch_size, seed=cfg.train.seed,
                              bank=build_bank(cfg, world, "train", lambda s: None))
    for _ in range(6):
        straight.next()
    assert torch.equal(ckpt["source"]["generator"], straight.generator.get_state())


def test_other_process_count_reseeds_the_streams_deterministically(runs):
    """With per-rank streams (the default) a checkpoint of N processes resumed with M != N re-seeds each stream
    from (seed, step, rank): deterministic, but not the data an uninterrupted run would have seen."""
    from envs import SequenceSource, make_world

    tmp, cfg, _ = runs
    ckpt = checkpoint.load(tmp / "two" / "latest.pt")
    ckpt["config"]["train"]["ddp_data"] = "rank"
    world = make_world(cfg.world.env, **cfg.world.options)
    states, logs = [], []
    for _ in range(2):
        source = SequenceSource(world, seq_len=3, batch_size=8, seed=123)
        resume_streams(ckpt, source, cfg, 4, False, logs.append)
        states.append(source.generator.get_state())
    assert torch.equal(states[0], states[1])
    assert not torch.equal(states[0], ckpt["ranks"][0]["source"]["generator"])
    assert "re-seeded" in logs[0] and "differ from an uninterrupted run" in logs[0]
    assert ddp.stream_seed(0, 0) == 0 and len({ddp.stream_seed(0, r, s) for r in range(3) for s in (0, 4)}) == 6


# -- the helpers, in 2 forked processes (no torchrun: a few seconds) ----------------------------------------------


def _helpers_worker(rank, world_size, init, out):
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world_size)
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(8, 5, 3, 3, generator=g), torch.randn(8 * 5 * 3 * 3 * 2, generator=g)
    rows = slice(4 * rank, 4 * rank + 4)
    bn = ddp.convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(5)), torch.device("cpu"))
    x_r = x[rows].clone().requires_grad_(True)
    y = bn(x_r)
    z = ddp.gather_with_grad(y.flatten(1))  # [8, 45]: the whole batch, rank 0's rows first
    loss = (z.flatten() * w[:360]).sum() / world_size  # every rank: the same loss over the gathered batch
    loss.backward()
    bn_grad = torch.cat([bn[0].weight.grad, bn[0].bias.grad])
    torch.save({"y": y.detach(), "gx": x_r.grad, "bn_grad": bn_grad, "running": bn[0].running_var,
                "mean": ddp.all_reduce_mean(torch.tensor([float(rank)]))}, f"{out}/{rank}.pt")
    dist.destroy_process_group()


def test_global_batchnorm_and_gather_with_grad_match_one_process(tmp_path):
    import torch.multiprocessing as mp
    mp.start_processes(_helpers_worker, args=(2, f"file://{tmp_path}/pg", str(tmp_path)), nprocs=2,
                       start_method="fork")
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(8, 5, 3, 3, generator=g), torch.randn(8 * 5 * 3 * 3 * 2, generator=g)
    bn = torch.nn.BatchNorm2d(5)
    x.requires_grad_(True)
    y = bn(x)
    (y.flatten() * w[:360]).sum().backward()
    outs = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    for r, o in enumerate(outs):
        rows = slice(4 * r, 4 * r + 4)
        assert torch.allclose(o["y"], y[rows].detach(), atol=1e-5)    # statistics over the global batch
        assert torch.allclose(o["gx"], x.grad[rows], atol=1e-5)       # gradients through stats and the gather
        assert torch.allclose(o["running"], bn.running_var, atol=1e-6)
        assert o["mean"].item() == 0.5
    # Each rank holds its share of the BatchNorm weight gradient; DDP's average x 2 ranks = the full gradient.
    assert torch.allclose(outs[0]["bn_grad"] + outs[1]["bn_grad"],
                          torch.cat([bn.weight.grad, bn.bias.grad]), atol=1e-4)


# -- the single-GPU path and the benchmark, as far as a CPU can check them -------------------------------------------


def test_bank_device_auto_keeps_a_bank_that_fits_on_the_gpu(smoke_cfg, monkeypatch):
    from seqjepa.data import bank_device, build_world

    world = build_world(smoke_cfg, torch.device("cpu"), "train")
    size = smoke_cfg.world.bank_objects * smoke_cfg.world.bank_views * 3 * 32 * 32  # uint8 views, 32²
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * size, 4 * size))
    assert bank_device(smoke_cfg, world, cuda) == cuda     # takes exactly half the free memory: fits
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * size - 2, 4 * size))
    assert bank_device(smoke_cfg, world, cuda) == cpu
    apply_overrides(smoke_cfg, ["world.bank_device=cpu"])
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (100 * size, 100 * size))
    assert bank_device(smoke_cfg, world, cuda) == cpu
    assert bank_device(smoke_cfg, world, cpu) == cpu


def test_bench_measures_the_bank_and_both_steps(smoke_cfg):
    from seqjepa.bench import run, table

    r = run(smoke_cfg, warmup=1, repeats=1, bank_objects=8, worlds=False, log=lambda s: None)
    ours, official = r["train_step"]["ours"], r["train_step"]["official"]
    assert r["views_per_step"] == 8 * 4 and r["bank"]["sample_views_per_s"] > 0
    assert official["precision"] == "fp32" and not official["channels_last"] and "Adam" in official["optimizer"]
    assert ours["views_per_s"] > 0 and ours["peak_mem_mib"] > 0
    assert r["train_step"]["speedup"] == pytest.approx(ours["views_per_s"] / official["views_per_s"])
    assert "the official way" in table(r)
