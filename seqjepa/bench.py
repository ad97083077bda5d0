"""Throughput benchmark: what the worlds, the view-bank sampler and a training step produce per second.

    python run.py bench                                   # the cpu preset, on this machine's device
    python run.py bench --preset paper --device cuda      # the paper setting (ResNet-18, 128², batch 512, 3+1)
    python run.py bench --preset smoke --out bench.json

For the chosen preset (``--set`` overrides apply) it measures, on one device:

* each registered world: views/s of a batched ``render`` (after a few random steps) and of ``step`` + ``render``,
  with ``train.batch_size`` episodes;
* the view-bank sampler: views/s of ``ViewBank.sample`` (batches of ``train.batch_size`` sequences of
  ``seq_len + 1`` views) from a small bank rendered for the benchmark (not the cached training bank);
* a training step as ``run.py train`` runs it (``seqjepa.train.train_step``: bf16 autocast, channels_last, fused
  AdamW on CUDA, ``torch.compile`` as configured): forward, backward, optimizer and EMA update on batches already
  on the device; the online probes are left out. Views/s count all ``seq_len + 1`` views of each sequence;
* the same step run the way the official code runs it (fp32, eager, contiguous memory, ``torch.optim.Adam``
  with its defaults, not fused), in the same process, and the ratio of the two.

Warm-up calls are not timed; the device is synchronised only around each timed region. Peak memory is CUDA's
``max_memory_allocated`` per measurement, or on the CPU the process's peak RSS so far (a high-water mark: it
never goes down, so later rows include earlier ones). It prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

import envs
from envs import ViewBank

from .config import Config
from .options import apply_overrides, to_dict
from .data import build_world
from .device import resolve_device, use_bf16, use_channels_last
from .model import tau_at
from .train import build_model, train_step, versions


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds_per_call(fn: Callable[[], object], device: torch.device, *, warmup: int, repeats: int) -> float:
    """Mean wall seconds of ``fn()`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(device)
    return (time.perf_counter() - t) / repeats


def reset_peak(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def world_options(cfg: Config, env_id: str) -> dict:
    """The preset's world options for its own world; for the others only ``image_size``, where they take it (a
    glimpse no larger than the saccade world's own scene)."""
    if env_id == envs.world_class(cfg.world.env)[0]:
        return dict(cfg.world.options)
    defaults = envs.WORLDS[env_id].Options()
    size = cfg.world.options.get("image_size")
    if size is None or not hasattr(defaults, "image_size") or size > getattr(defaults, "scene_size", size):
        return {}
    return {"image_size": size}


def bench_world(world: envs.World, n: int, device: torch.device, *, warmup: int, repeats: int) -> dict:
    g = torch.Generator(device=world.device)
    g.manual_seed(0)
    state = world.reset(n, g)
    for _ in range(3):
        state = world.step(state, world.sample_action(state, g), g)
    render = seconds_per_call(lambda: world.render(state), device, warmup=warmup, repeats=repeats)

    def step_render():
        nonlocal state
        state = world.step(state, world.sample_action(state, g), g)
        return world.render(state)

    step = seconds_per_call(step_render, device, warmup=warmup, repeats=repeats)
    return {"render_views_per_s": n / render, "render_ms": 1e3 * render,
            "step_render_views_per_s": n / step, "step_render_ms": 1e3 * step}


def make_step(cfg: Config, world: envs.World, device: torch.device, *, official: bool) -> tuple[Callable, dict]:
    """A training step on a given batch, as ``run.py train`` runs it or as the official code does."""
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg, world).to(device)
    if official:
        bf16, channels_last, compiled = False, False, False
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optim.lr)  # the official optimizer, its defaults
        how = {"precision": "fp32", "channels_last": False, "compile": False, "optimizer": "Adam (defaults)"}
    else:
        bf16 = use_bf16(cfg.train.bf16, device)
        channels_last = use_channels_last(cfg.train.channels_last, bf16)
        compiled = cfg.train.compile
        fused = device.type == "cuda"
        optimizer = torch.optim.AdamW(model.param_groups(cfg.optim.weight_decay), lr=cfg.optim.lr,
                                      betas=(cfg.optim.beta1, cfg.optim.beta2), fused=fused)
        how = {"precision": "bf16 autocast" if bf16 else "fp32", "channels_last": channels_last,
               "compile": compiled, "optimizer": f"AdamW (fused={fused})"}
    model.channels_last = channels_last
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compiled else model
    model.train()
    tau = tau_at(0, cfg.train.steps, cfg.model.tau_base)

    def step(batch: envs.Batch) -> None:
        train_step(batch, forward=forward, model=model, optimizer=optimizer, lr=cfg.optim.lr, tau=tau, bf16=bf16,
                   device=device)

    how["params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return step, how


def bench_train_step(cfg: Config, world: envs.World, batches: list[envs.Batch], device: torch.device, *,
                     official: bool, warmup: int, repeats: int) -> dict:
    reset_peak(device)
    step, how = make_step(cfg, world, device, official=official)
    i = 0

    def one():
        nonlocal i
        step(batches[i % len(batches)])
        i += 1

    t0 = time.perf_counter()
    one()  # the first step (torch.compile compiles here) is timed on its own
    sync(device)
    first = time.perf_counter() - t0
    sec = seconds_per_call(one, device, warmup=max(0, warmup - 1), repeats=repeats)
    views = batches[0].views.shape[0] * batches[0].views.shape[1]
    return {**how, "views_per_s": views / sec, "ms_per_step": 1e3 * sec, "first_step_s": first,
            "peak_mem_mib": peak_mib(device)}


def run(cfg: Config, *, warmup: int = 3, repeats: int = 10, bank_objects: int = 64, worlds: bool = True,
        official: bool = True, log: Callable[[str], None] = print) -> dict:
    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    B, T = cfg.train.batch_size, cfg.train.seq_len + 1
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
    else:
        device_name = f"{cpu_name()}, {torch.get_num_threads()} threads"
    result: dict = {"preset": cfg.preset, "device": str(device), "device_name": device_name,
                    "batch_size": B, "views_per_sequence": T, "views_per_step": B * T,
                    "warmup": warmup, "repeats": repeats, "versions": versions(), "time": time.strftime("%F %T")}
    if device.type == "cpu" and hasattr(os, "getloadavg"):
        result["load_average_1min"] = os.getloadavg()[0]  # a shared machine shows here

    result["worlds"] = {}
    for env_id in sorted(envs.WORLDS) if worlds else []:
        try:
            w = envs.make_world(env_id, device=str(device), **{**world_options(cfg, env_id), "split": "train"})
            n = B * cfg.world.live_chunk  # episodes per world call, as a live source renders them
            result["worlds"][env_id] = {"image_size": w.image_size, "episodes_per_call": n,
                                        **bench_world(w, n, device, warmup=warmup, repeats=repeats)}
        except Exception as e:  # a plug-in world that fails must not cost the other numbers
            result["worlds"][env_id] = {"error": f"{type(e).__name__}: {e}"}
        log(f"  world {env_id}: done")

    world = build_world(cfg, device, "train")
    objects = min(cfg.world.bank_objects, bank_objects)
    views = max(cfg.world.bank_views, T)
    sync(device)
    t0 = time.perf_counter()
    bank = ViewBank.render(world, objects, views, cfg.train.seed)
    sync(device)
    render_s = time.perf_counter() - t0
    g = torch.Generator(device=bank.views.device)
    g.manual_seed(cfg.train.seed)
    sample = seconds_per_call(lambda: bank.sample(world, B, T, g), device, warmup=warmup, repeats=repeats)
    result["bank"] = {"objects": objects, "views": views, "render_views_per_s": objects * views / render_s,
                      "sample_views_per_s": B * T / sample, "sample_ms": 1e3 * sample}
    log("  view bank: done")

    batches = [bank.sample(world, B, T, g) for _ in range(4)]
    del bank
    result["train_step"] = {"ours": bench_train_step(cfg, world, batches, device, official=False, warmup=warmup,
                                                     repeats=repeats)}
    log("  training step: done")
    if official:
        result["train_step"]["official"] = bench_train_step(cfg, world, batches, device, official=True,
                                                            warmup=warmup, repeats=repeats)
        result["train_step"]["speedup"] = (result["train_step"]["ours"]["views_per_s"]
                                           / result["train_step"]["official"]["views_per_s"])
        log("  official-style step: done")
    # How many times faster each source makes views than training eats them (10x or more keeps the data off the critical path). The
    # step is the preset's network on its own world's view size; worlds of another size are marked.
    consume = result["train_step"]["ours"]["views_per_s"]
    size = world.image_size
    result["supply"] = {
        **{f"world {k} step + render" + ("" if w["image_size"] == size else f" ({w['image_size']}² views)"):
           w["step_render_views_per_s"] / consume for k, w in result["worlds"].items() if "error" not in w},
        "view bank sampler": result["bank"]["sample_views_per_s"] / consume}
    result["config"] = to_dict(cfg)
    return result


def table(r: dict) -> str:
    mem = "peak GPU MiB" if r["device"].startswith("cuda") else "peak RSS MiB"
    lines = [f"seqjepa bench: preset {r['preset']}, {r['device']} ({r['device_name']}), batch {r['batch_size']} "
             f"x {r['views_per_sequence']} views, torch {r['versions'].get('torch', '?')}"
             + (f", load average {r['load_average_1min']:.1f}" if "load_average_1min" in r else ""),
             "",
             f"{'what':58s} {'views/s':>10s} {'ms/call':>9s} {mem:>13s}"]

    def row(what, vps, ms, peak=""):
        lines.append(f"{what:58s} {vps:10.0f} {ms:9.1f} {peak:>13}")

    for env_id, w in r["worlds"].items():
        if "error" in w:
            lines.append(f"{'world ' + env_id:58s} failed: {w['error']}")
            continue
        row(f"world {env_id} render ({w['image_size']}², {w['episodes_per_call']}/call)", w["render_views_per_s"],
            w["render_ms"])
        row(f"world {env_id} step + render", w["step_render_views_per_s"], w["step_render_ms"])
    b = r["bank"]
    row(f"view bank sampler ({b['objects']} objects x {b['views']} views)", b["sample_views_per_s"], b["sample_ms"])
    row(f"view bank rendering ({b['objects']} objects x {b['views']} views, once)", b["render_views_per_s"],
        1e3 * b["objects"] * b["views"] / b["render_views_per_s"])
    for key in ("ours", "official"):
        s = r["train_step"].get(key)
        if s:
            row(f"train step, {'ours' if key == 'ours' else 'the official way'}", s["views_per_s"],
                s["ms_per_step"], f"{s['peak_mem_mib']:.0f}")
            lines.append(f"    {s['precision']}, channels_last {'on' if s['channels_last'] else 'off'}, "
                         f"{'compiled' if s['compile'] else 'eager'}, {s['optimizer']}, "
                         f"{s['params'] / 1e6:.2f}M params; first step {s['first_step_s']:.2f} s")
    if "speedup" in r["train_step"]:
        lines.append(f"\ntraining step, ours / official: {r['train_step']['speedup']:.2f}x")
    if r.get("supply"):
        lines.append("\nhow many times faster each source makes views than training uses them (training: "
                     f"{r['train_step']['ours']['views_per_s']:.0f} views/s); at 1x or below the data source holds "
                     "training back, 10x or more keeps it off the critical path, even on a faster device:")
        lines += [f"  {what:56s} {x:8.1f}x" for what, x in r["supply"].items()]
    return "\n".join(lines)


def cmd(args, cfg: Config) -> int:
    """``run.py bench``: run, print the table, write the JSON."""
    if args.device:
        apply_overrides(cfg, [f"train.device={args.device}"])
    print(f"benchmarking preset {cfg.preset} on {resolve_device(cfg.train.device)} ...", file=sys.stderr)
    r = run(cfg, warmup=args.warmup, repeats=args.repeats, bank_objects=args.bank_objects,
            worlds=not args.no_worlds, official=not args.no_official, log=lambda s: print(s, file=sys.stderr))
    print(table(r))
    out = Path(args.out or Path(cfg.train.runs_dir) / f"bench-{cfg.preset}-{r['device'].replace(':', '')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as fh:
        json.dump(r, fh, indent=2)
    print(f"\njson: {out}")
    return 0
