"""``run.py preview``: an episode of a world's random policy as an MP4 and as a GIF in TensorBoard.

The episode runs through the single Gymnasium env (``gym.make(id, render_mode="rgb_array")``), so what is shown
is what ``render()`` gives: the view itself, or for saccades the full image with the fixation path drawn.
The MP4 is written with moviepy; the GIF is encoded with Pillow and logged as an image summary, because
``SummaryWriter.add_video`` writes nothing with moviepy 2 (pytorch/pytorch#147317).
"""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path

import numpy as np

from seqjepa.options import ConfigError, set_field

MIN_SIDE = 256  # frames are enlarged (nearest neighbour) to at least this many pixels per side


def world_options(cls, settings: list[str]) -> dict:
    """``world.options.NAME=VALUE`` settings -> validated options of ``cls`` (every other key is an error; an old
    option name is read as its new one, see ``World.rename_options``)."""
    opts = cls.Options()
    given = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("world.options."):
            raise ConfigError(f"--set {item}: expected world.options.NAME=VALUE")
        given[key[len("world.options."):]] = value
    given = cls.rename_options(given, prefix="world.options.")
    for key, value in given.items():
        set_field(opts, key, value, prefix="world.options.")
    return {k: v for k, v in dataclasses.asdict(opts).items() if k in given}


def episode_frames(env_id: str, options: dict, steps: int, seed: int) -> list[np.ndarray]:
    """``steps + 1`` RGB frames (H, W, 3) of one random-policy episode of the single Gymnasium env."""
    import gymnasium as gym
    import torch

    env = gym.make(env_id, render_mode="rgb_array", max_episode_steps=steps + 1, **options)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    world = env.unwrapped.world
    frames = [env.render()]
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        action = world.sample_action(env.unwrapped._state, g)[0].cpu().numpy()  # the world's random policy
        env.step(action)
        frames.append(env.render())
    env.close()
    return [enlarge(f) for f in frames]


def enlarge(frame: np.ndarray) -> np.ndarray:
    """Nearest-neighbour upscaling to at least MIN_SIDE pixels, with even sides (libx264 needs them)."""
    k = max(1, math.ceil(MIN_SIDE / max(frame.shape[:2])))
    frame = frame.repeat(k, 0).repeat(k, 1)
    h, w = frame.shape[0] // 2 * 2, frame.shape[1] // 2 * 2
    return np.ascontiguousarray(frame[:h, :w])


def write_mp4(frames: list[np.ndarray], path: Path, fps: int) -> None:
    from moviepy import ImageSequenceClip

    path.parent.mkdir(parents=True, exist_ok=True)
    ImageSequenceClip(frames, fps=fps).write_videofile(str(path), codec="libx264", audio=False, logger=None)


def gif_bytes(frames: list[np.ndarray], fps: int) -> bytes:
    from PIL import Image

    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return buf.getvalue()


def log_gif(logdir: Path, tag: str, frames: list[np.ndarray], fps: int, step: int = 0) -> None:
    """An animated GIF as a TensorBoard image summary (shows, animated, under Images)."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import SummaryWriter

    h, w = frames[0].shape[:2]
    image = Summary.Image(height=h, width=w, colorspace=3, encoded_image_string=gif_bytes(frames, fps))
    writer = SummaryWriter(str(logdir))
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), global_step=step)
    writer.close()


def cmd(args) -> int:
    import envs

    if args.steps < 1 or args.fps < 1:
        raise ConfigError(f"--steps and --fps: got {args.steps} and {args.fps}; expected integers >= 1")
    env_id, cls = envs.world_class(args.env)
    options = world_options(cls, args.set or [])
    short = env_id.split("/")[-1]
    out = Path(args.out) if args.out else Path("runs") / f"preview-{short}" / "preview.mp4"
    frames = episode_frames(env_id, options, args.steps, args.seed)
    write_mp4(frames, out, args.fps)
    log_gif(out.parent, f"preview/{short}", frames, args.fps)
    print(f"{len(frames)} frames of {env_id} (seed {args.seed})\nvideo:       {out}\n"
          f"tensorboard: tensorboard --logdir {out.parent}  (Images: preview/{short})")
    return 0
