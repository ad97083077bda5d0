"""TensorBoard inspection of a run: what the model predicts, the config, hparams and the evaluation.

Called once at the end of training (:func:`end_of_training`, from ``seqjepa/train.py``) and by ``run.py eval``
(:func:`log_inspection` + :func:`log_evaluation`, into the run folder). Tags written (``P`` = the prefix,
``inspect`` at the end of training, ``eval`` for ``run.py eval``):

    projector  P/prediction_vs_target   ẑ and the actual target embeddings (kind column: predicted / actual)
               P/z_agg                  the aggregate of the same sequences
    images     P/imagination/{i}        autoregressive rollouts with the nearest real views
               P/agg_attention          [AGG] attention over the views
    text       config/table             the whole config as a markdown table
               eval/table, eval/notes   the evaluation table and skipped suites (run.py eval)
    hparams    the flattened config with the final metrics (``hparam/...``), written in the run folder itself
    scalars    eval/<metric>            every evaluation number at the checkpoint's step
    images     eval/accuracy_vs_m, eval/path_integration   the report's plots

Projector points are capped at ``MAX_POINTS`` and every call passes ``global_step``. The hparams plugin keeps the
first hparams summary of a run, so they are written once, at the end of training, with the final training
metrics; evaluation numbers are the ``eval/`` scalars and table.

>>> from torch.utils.tensorboard import SummaryWriter                               # doctest: +SKIP
>>> with SummaryWriter("runs/demo") as w:                                           # doctest: +SKIP
...     log_inspection(w, model, world, cfg, step=1500, device="cpu", bank=bank)
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from torch import nn

from envs.base import World
from envs.sequences import ViewBank

from .common import generator_for
from .inspection import HEADER, attention_image, imagination_strips, projector_points

if TYPE_CHECKING:
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    from seqjepa.config import Config

MAX_POINTS = 1000   # projector points per call (ẑ + targets + z_agg), so the browser stays responsive
ROLLOUTS = 4        # imagination strips
IMAGINED = 4        # imagined steps per strip
ATTENTION_ROWS = 6
FINAL_TAGS = ("train/loss", "probe_online/top1_z_agg", "probe_online/r2_rel_action")


def image(writer: SummaryWriter, tag: str, img: Image.Image, step: int) -> None:
    writer.add_image(tag, np.asarray(img.convert("RGB")), step, dataformats="HWC")


def log_inspection(writer: SummaryWriter, model: nn.Module, world: World, cfg: Config, *, step: int,
                   device: torch.device | str, bank: ViewBank | None = None, prefix: str = "inspect",
                   seed: int = 0, log: Callable[[str], None] = print) -> list[str]:
    """Projector, imagination rollouts and [AGG] attention for ``model`` on ``world``; returns the tags written.

    Sequences have M = ``cfg.train.seq_len`` observed views (the trained length); rollouts imagine up to
    ``IMAGINED`` more. Models without a predictor (encoder-only) get nothing.
    """
    if not model.predicts:
        log("tensorboard: the model has no predictor; inspection skipped")
        return []
    gen = generator_for(world, bank, seed)
    m = cfg.train.seq_len
    views = bank.num_views if bank is not None else m + 1 + IMAGINED
    tags = []
    n = min(MAX_POINTS // 3, cfg.eval.test_sequences)
    points = projector_points(model, world, bank, m=m, n=n, gen=gen, device=device, step=step)
    for name, p in points.items():
        tag = f"{prefix}/{name}"
        _prepare_projector(writer, tag, step)
        writer.add_embedding(p["mat"], metadata=p["metadata"], metadata_header=HEADER, label_img=p["label_img"],
                             global_step=step, tag=tag)
        tags.append(tag)
    k = min(IMAGINED, views - m)
    if k >= 1:
        for i, img in enumerate(imagination_strips(model, world, bank, m=m, k=k, n=ROLLOUTS, gen=gen,
                                                   device=device)):
            image(writer, f"{prefix}/imagination/{i}", img, step)
            tags.append(f"{prefix}/imagination/{i}")
    m_att = min(views, max(m, max(cfg.eval.m_val), 2))
    att = attention_image(model, world, bank, m=m_att, n=ATTENTION_ROWS, gen=gen, device=device)
    if att is not None:
        image(writer, f"{prefix}/agg_attention", att, step)
        tags.append(f"{prefix}/agg_attention")
    writer.add_text(f"{prefix}/about", _ABOUT.format(m=m, k=k, m_att=m_att), step)
    return tags


def _prepare_projector(writer: SummaryWriter, tag: str, step: int) -> None:
    """Keep the run's earlier projector tensors and replace a re-logged (tag, step).

    torch's writer rewrites ``projector_config.pbtxt`` with only the embeddings *it* added, so a second writer on
    the same folder (``run.py eval`` after training) would hide the earlier ones: start from the file instead.
    """
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    logdir = Path(writer.get_logdir())
    if not hasattr(writer, "_projector_config"):
        config = ProjectorConfig()
        path = logdir / "projector_config.pbtxt"
        if path.is_file():
            text_format.Parse(path.read_text(), config)
        writer._projector_config = config  # the attribute add_embedding appends to
    name = f"{tag}:{str(step).zfill(5)}"
    kept = [e for e in writer._projector_config.embeddings if e.tensor_name != name]
    del writer._projector_config.embeddings[:]
    writer._projector_config.embeddings.extend(kept)
    shutil.rmtree(logdir / str(step).zfill(5) / _encode(tag), ignore_errors=True)  # no "dir exists"


def _encode(tag: str) -> str:
    """The folder name add_embedding gives a tag (torch's SummaryWriter._encode)."""
    return tag.replace("%", "%25").replace("/", "%2f").replace("\\", "%5c")


_ABOUT = ("**Projector** `prediction_vs_target`: the predictor's ẑ (kind = predicted) beside the target encoder's "
          "embedding of the same target view (kind = actual), M = {m} observed views; `z_agg`: their aggregate.\n\n"
          "**Imagination**: top row the real views (blue: observed, grey: future); below, for each of {k} "
          "imagined steps (ẑ fed back as the next observation token), the nearest real views by cosine "
          "(green: the true view, yellow: another view of the object, red: another object).\n\n"
          "**[AGG] attention**: last aggregator layer, heads averaged, share of each of {m_att} views.")


def flat_config(cfg: Config) -> dict[str, bool | str | float | int]:
    """The config as dotted keys with hparams-safe values (lists and dicts become JSON strings)."""
    from seqjepa.options import to_dict

    out: dict = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict) and v:
                walk(v, f"{prefix}{k}.")
            else:
                out[f"{prefix}{k}"] = v if isinstance(v, (bool, str, int, float)) else json.dumps(v)

    walk(to_dict(cfg), "")
    return out


def log_config(writer: SummaryWriter, cfg: Config, step: int) -> None:
    """The config as a markdown table (cleanrl's |param|value| card)."""
    rows = "\n".join(f"|{k}|{v}|" for k, v in flat_config(cfg).items())
    writer.add_text("config/table", "|param|value|\n|-|-|\n" + rows, step)


def log_hparams(writer: SummaryWriter, cfg: Config, metrics: dict[str, float], step: int) -> None:
    """hparams = the flattened config, metrics under ``hparam/`` (not reusing scalar tags), in the run folder."""
    finite = {f"hparam/{k}": float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}
    writer.add_hparams(flat_config(cfg), finite, run_name=".", global_step=step)


def last_scalars(run_dir: str | Path, tags: tuple[str, ...] = FINAL_TAGS) -> dict[str, float]:
    """The last logged value of each of ``tags`` in the run folder's event files (absent tags are left out)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 1, "tensors": 1})
    acc.Reload()
    have = set(acc.Tags().get("scalars", []))
    return {t: acc.Scalars(t)[-1].value for t in tags if t in have}


def end_of_training(writer: SummaryWriter, model: nn.Module, world: World, cfg: Config, *, step: int,
                    device: torch.device | str, bank: ViewBank | None = None,
                    log: Callable[[str], None] = print) -> None:
    """The one call at the end of ``train()``: inspection, config table and hparams with the final metrics."""
    try:
        log_inspection(writer, model, world, cfg, step=step, device=device, bank=bank, seed=cfg.train.seed,
                       log=log)
    except Exception as e:  # inspection must never cost a finished run its checkpoint or its summary
        log(f"tensorboard: inspection failed ({type(e).__name__}: {e}); training results are unaffected")
    log_config(writer, cfg, step)
    writer.flush()
    final = {k.replace("/", "_"): v for k, v in last_scalars(writer.log_dir).items()}
    log_hparams(writer, cfg, final, step)


def log_evaluation(writer: SummaryWriter, results: dict, step: int, *, table: str,
                   plots: dict[str, Image.Image]) -> None:
    """Every number of the trained model as ``eval/<metric>``, the table and notes as text, the plots."""
    trained = results.get("trained", results)
    for name, entry in trained.get("metrics", {}).items():
        writer.add_scalar(f"eval/{name}", entry["value"], step)
    writer.add_text("eval/table", table, step)
    notes = trained.get("notes") or {}
    if notes:
        writer.add_text("eval/notes", "\n".join(f"- **{k}**: {v}" for k, v in notes.items()), step)
    for name, img in plots.items():
        if img is not None:
            image(writer, f"eval/{name}", img, step)
