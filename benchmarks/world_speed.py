"""Rendering speed of every registered world: views/s of ``world.render`` after random ``step``s.

Each world in ``envs.WORLDS`` is built (with ``image_size`` when it has that option), reset at ``--batch``
episodes, and then stepped with its own random policy; only ``render`` is timed (``step`` is reported apart).
Nothing is hard-coded: every number printed is measured on this machine.

    python benchmarks/world_speed.py --device cpu --threads 2 --image-size 32
    python benchmarks/world_speed.py --worlds Augmentations --set actions=crop
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import envs  # noqa: E402
from seqjepa.options import parse_value  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(env_id: str, device: str = "cpu", batch: int = 256, steps: int = 10, image_size: int | None = 32,
            options: dict | None = None, seed: int = 0) -> dict:
    """Build ``env_id`` and time ``steps`` rounds of step + render at ``batch`` views; returns rates per second.

    >>> r = measure("seqjepa/Augmentations-v0", batch=8, steps=2, options={"per_class": 2})
    >>> sorted(r)
    ['build_s', 'render_views_per_s', 'step_views_per_s']
    """
    cls = envs.WORLDS[env_id]
    opts = dict(options or {})
    if image_size is not None and "image_size" in {f.name for f in dataclasses.fields(cls.Options)}:
        opts.setdefault("image_size", image_size)
    t0 = time.perf_counter()
    world = envs.make_world(env_id, device=device, **opts)
    build = time.perf_counter() - t0
    dev = torch.device(device)
    g = torch.Generator(device=dev).manual_seed(seed)
    state = world.reset(batch, g)
    world.render(state)  # warm-up: lazy initialisation, allocator, kernels
    render_s = step_s = 0.0
    for _ in range(steps):
        sync(dev)
        t = time.perf_counter()
        state = world.step(state, world.sample_action(state, g), g)
        sync(dev)
        t1 = time.perf_counter()
        world.render(state)
        sync(dev)
        step_s, render_s = step_s + t1 - t, render_s + time.perf_counter() - t1
    n = batch * steps
    return {"build_s": build, "render_views_per_s": n / render_s, "step_views_per_s": n / step_s}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=10, help="timed step + render rounds per world")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = torch's default")
    p.add_argument("--worlds", nargs="*", default=None, help="substrings of world ids to run (default: all)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="world options (all worlds run)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    options = {k: parse_value(v) for k, v in (item.split("=", 1) for item in args.set)}
    ids = [i for i in sorted(envs.WORLDS) if not args.worlds or any(w in i for w in args.worlds)]
    print(f"device={args.device} batch={args.batch} image_size={args.image_size} threads={torch.get_num_threads()}")
    for env_id in ids:
        try:
            r = measure(env_id, args.device, args.batch, args.steps, args.image_size, options)
        except ValueError as e:  # e.g. 3DIEBench without its data: the other worlds still run
            print(f"{env_id:40s} skipped: {e}", flush=True)
            continue
        print(f"{env_id:40s} render {r['render_views_per_s']:10,.0f} views/s   step {r['step_views_per_s']:10,.0f} "
              f"views/s   build {r['build_s']:.2f} s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
