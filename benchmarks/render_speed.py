"""Images per second of the SDF renderer on RotatingObjects views, measured (nothing hard-coded).

    python benchmarks/render_speed.py                      # CPU, 32/64/128 px, batch 64, all torch threads
    python benchmarks/render_speed.py --threads 2 --sizes 32 64
    python benchmarks/render_speed.py --device cuda --batch 512

Each size renders ``--batch`` random views of objects from all 55 categories; the best of ``--repeats`` timed
runs (after one warm-up) is reported, with and without floor shadows.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.objects import RotatingObjects  # noqa: E402


def measure(size: int, batch: int, device: str, repeats: int, shadows: bool) -> float:
    """Best-of-``repeats`` images/s for one batch of ``batch`` views at ``size`` px."""
    world = RotatingObjects(image_size=size, num_classes=55, instances=8, shadows=shadows, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    state = world.reset(batch, g)
    world.render(state)  # warm-up: caches, allocator
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        world.render(state)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return batch / best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128], help="image sides in pixels")
    ap.add_argument("--batch", type=int, default=64, help="views per render call")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per setting (the best is reported)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = leave torch's default")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device={args.device} threads={torch.get_num_threads()} batch={args.batch} torch={torch.__version__}")
    print(f"{'size':>6} {'img/s (shadows)':>16} {'img/s (no shadows)':>19}")
    for size in args.sizes:
        with_s = measure(size, args.batch, args.device, args.repeats, True)
        without = measure(size, args.batch, args.device, args.repeats, False)
        print(f"{size:>6} {with_s:>16.1f} {without:>19.1f}", flush=True)


if __name__ == "__main__":
    main()
