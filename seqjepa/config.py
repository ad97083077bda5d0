"""The run's configuration: one dataclass per concern (world, model, optim, train, eval), the presets, and what a
resumed run may not change. Fields and their validation are ``seqjepa.options``'s.

>>> from seqjepa.options import apply_overrides
>>> cfg = preset("smoke")
>>> apply_overrides(cfg, ["model.depth=10", "train.steps=5"])
>>> cfg.model.depth, cfg.train.steps
(10, 5)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from .options import ConfigError, flatten, from_dict, opt, to_dict


# What a resumed run keeps from its config.json: the network, the data it trains on and the world they come from.
# A checkpoint does not load into another network, and other data would no longer be a continuation of the run.
RESUME_FIXED = ("preset", "model", "world.env", "world.options", "world.source", "world.bank_objects",
                "world.bank_views", "train.seq_len", "train.seed")


def resume_differences(saved: Config, new: Config) -> list[tuple[str, Any, Any]]:
    """``(setting, saved value, new value)`` for every setting of RESUME_FIXED that ``new`` changes, in field
    order; a world option present on one side only has ``None`` on the other."""
    a, b = flatten(to_dict(saved)), flatten(to_dict(new))
    keys = list(a) + [k for k in b if k not in a]
    return [(k, a.get(k), b.get(k)) for k in keys
            if any(k == f or k.startswith(f + ".") for f in RESUME_FIXED) and a.get(k) != b.get(k)]


# ----------------------------------------------------------------------------------------------------------------
# The run configuration


@dataclass
class WorldConfig:
    """Which world produces the training sequences, and how."""
    env: str = opt("seqjepa/RotatingObjects-v0", "world id; 'module:Id-v0' imports a plug-in module first")
    options: dict = opt({}, "the world's own options (see `run.py envs`); set with world.options.NAME=VALUE")
    source: Literal["bank", "live"] = opt("bank", "bank: pre-rendered views read from a cache; live: render "
                                                  "each sequence as the agent acts")
    bank_objects: int = opt(1000, "objects (episodes) in the view bank", ge=1)
    bank_views: int = opt(12, "views pre-rendered per object in the view bank (3DIEBench has 50)", ge=2)
    cache_dir: str = opt("~/.cache/seqjepa", "where view banks are cached")
    bank_device: Literal["auto", "cpu"] = opt("auto", "where the view bank lives: auto = on the training device "
                                                      "when it fits in half its free memory, else host memory "
                                                      "(each batch is then copied over); cpu = host memory")
    agent: str = opt("random", "policy choosing the actions of live sequences (see agents/)")
    live_chunk: int = opt(1, "live: batches rolled out per world call and served one per step; a chunk pays the "
                             "world's per-call cost once (the augmentations on 2 CPU cores: 5.6x -> 14-17x faster "
                             "than training at 8)", ge=1)


# Upper bounds that only refuse the absurd. A network 16x the paper's width (a checkpoint's hparams are checked
# against these before anything is allocated); an Adam(W) step or decay above 10 per update can only diverge; seeds
# are 32-bit, which every generator here (torch, numpy, the worlds') accepts with the offsets added to them.
MAX_WIDTH = 1024
MAX_LR = 10.0
MAX_SEED = 2**32 - 1


@dataclass
class ModelConfig:
    """The network: seq-JEPA (paper §2.2) or one of the baselines (paper §3.1), on the same encoder."""
    # Its names are seqjepa.baselines.METHODS, a layer above this one: a name is checked when the network is built
    # (exit 2 from run.py, before any world), and run.py's --help lists them.
    method: str = opt("seqjepa", "what to train: seq-JEPA or a baseline (same encoder, loop and evaluation); "
                                 "the baselines read depth, width, stem, act_dim, ema and tau_base")
    method_options: dict = opt({}, "the baseline's own settings (projector widths, temperatures, loss weights), "
                                   "on top of its preset; set with model.method_options.NAME=VALUE")
    depth: Literal[10, 18, 34] = opt(18, "ResNet depth (10 = one block per stage)")
    width: int = opt(64, "channels of the first ResNet stage (64 in the paper)", ge=4, le=MAX_WIDTH)
    stem: Literal["imagenet", "cifar"] = opt("imagenet", "imagenet: 7x7/2 conv + maxpool; cifar: 3x3/1 conv")
    act_dim: int = opt(128, "action-embedding width", ge=1, le=MAX_WIDTH)
    agg_layers: int = opt(3, "transformer layers of the aggregator", ge=1, le=64)
    agg_heads: int = opt(4, "attention heads of the aggregator", ge=1, le=64)
    agg_ff_mult: int = opt(4, "feed-forward width as a multiple of the token width", ge=1, le=16)
    dropout: float = opt(0.1, "dropout inside the aggregator", ge=0.0, le=1.0)
    pos_emb: bool = opt(False, "learned positional embedding in the aggregator (the paper has none)")
    pred_hidden: int = opt(1024, "hidden width of the predictor MLP", ge=1, le=16 * MAX_WIDTH)
    act_cond: Literal["both", "predictor", "transformer", "none"] = opt(
        "both", "where actions condition the model (paper Table 4 ablations)")
    ema: bool = opt(True, "EMA target encoder; false = the online encoder under stop-gradient")
    tau_base: float = opt(0.996, "initial EMA momentum; rises to 1 on a cosine schedule", ge=0.0, le=1.0)


@dataclass
class OptimConfig:
    """AdamW with linear warm-up and cosine decay, stepped every iteration (paper §A.2)."""
    lr: float = opt(4e-4, "peak learning rate", gt=0.0, le=MAX_LR)
    weight_decay: float = opt(1e-3, "AdamW weight decay (not applied to biases and norms)", ge=0.0, le=MAX_LR)
    warmup_steps: int = opt(100, "linear warm-up steps from start_lr to lr", ge=0)
    start_lr: float = opt(1e-5, "learning rate at step 0", ge=0.0, le=MAX_LR)
    final_lr: float = opt(1e-5, "learning rate at the last step", ge=0.0, le=MAX_LR)
    beta1: float = opt(0.9, "AdamW beta1", ge=0.0, le=1.0)
    beta2: float = opt(0.999, "AdamW beta2", ge=0.0, le=1.0)
    probe_lr: float = opt(1e-3, "learning rate of the online probes (their own Adam)", gt=0.0, le=MAX_LR)


@dataclass
class TrainConfig:
    """The training run."""
    steps: int = opt(1500, "optimisation steps", ge=1)
    batch_size: int = opt(64, "sequences per step", ge=2)
    seq_len: int = opt(3, "M_tr: observed views per sequence (one more view is the target)", ge=1)
    seed: int = opt(0, "seeds python, numpy, torch and the world", ge=0, le=MAX_SEED)
    device: str = opt("auto", "auto, cpu, cuda or cuda:N")
    bf16: Literal["auto", "on", "off"] = opt("auto", "bf16 autocast; auto = on for CUDA and CPUs with AMX-BF16")
    channels_last: Literal["auto", "on", "off"] = opt("auto", "channels_last memory format; auto = with bf16")
    compile: bool = opt(False, "torch.compile the encoder (slow first step)")
    threads: int = opt(0, "CPU threads for torch; 0 = all cores", ge=0)
    log_every: int = opt(25, "steps between TensorBoard scalars", ge=1)
    ckpt_every: int = opt(500, "steps between checkpoints", ge=1)
    runs_dir: str = opt("runs", "parent folder of run folders")
    name: str = opt("", "run folder name; empty = <preset>-<world>-s<seed>-<time>")
    eval_after: bool = opt(True, "run the evaluation suites when training ends")
    progress: Literal["auto", "on", "off"] = opt("auto", "progress bar; auto = only on a terminal")
    sync_batchnorm: bool = opt(False, "under torchrun: BatchNorm statistics over the global batch (off = "
                                      "per-process statistics, as the paper)")
    ddp_data: Literal["rank", "shared"] = opt("rank", "under torchrun: rank = each process draws its share of the "
                                                      "global batch from its own stream; shared = each draws the "
                                                      "whole batch from the single-process stream and keeps its "
                                                      "slice (the data of a 1-process run; N x the data work)")


@dataclass
class EvalConfig:
    """Frozen-model evaluation (paper §3): every number is written with this protocol."""
    m_val: list[int] = opt([1, 2, 3, 4, 5], "M_val values for the z_agg linear probe", ge=1, min_items=1)
    train_sequences: int = opt(4000, "probe training sequences (from the world's train split)", ge=16)
    test_sequences: int = opt(1000, "probe test sequences (from the world's test split)", ge=16)
    linear_epochs: int = opt(100, "epochs of linear classifiers (paper: 300); linear regressors are fitted exactly",
                             ge=1)
    mlp_epochs: int = opt(100, "epochs of MLP regression heads (paper: 300)", ge=1)
    lr: float = opt(1e-3, "Adam learning rate of the probes (paper: Adam defaults)", gt=0.0, le=MAX_LR)
    batch_size: int = opt(256, "probe batch size (paper: 256)", ge=1)
    mlp_hidden: int = opt(1024, "hidden width of the two-hidden-layer MLP heads (official code: 1024-1024)", ge=1)
    val_fraction: float = opt(0.1, "fraction of the train episodes whose sequences are held out to pick each "
                                   "regression head's epoch (lowest validation loss); 0 = the last epoch, as the "
                                   "paper. Classifiers always use the last epoch", ge=0.0, le=0.9)
    seed: int = opt(0, "seed for probe data and heads", ge=0, le=MAX_SEED)
    random_init_baseline: bool = opt(True, "also evaluate the same network at random initialisation")
    suites: list[str] = opt(["all"], "suites run after training and by `run.py eval` without --suite: all, or "
                                     "suite names (eval.suite.SUITES)")


@dataclass
class Config:
    """Everything a run needs; written to <run>/config.json."""
    preset: str = opt("cpu", "the preset these values started from")
    world: WorldConfig = field(default_factory=WorldConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# A preset's world options are written per world (each world's own option names); a world it does not list, a
# plug-in's for instance, starts from its own defaults.
OBJECTS, AUGMENTATIONS, SACCADES, IEBENCH = ("seqjepa/RotatingObjects-v0", "seqjepa/Augmentations-v0",
                                             "seqjepa/Saccades-v0", "seqjepa/3DIEBench-v0")
PRESETS: dict[str, dict] = {
    # A few seconds: tests and a first look.
    "smoke": {
        "world": {"bank_objects": 32, "bank_views": 6},
        "world_options": {OBJECTS: {"image_size": 32, "num_classes": 4}, AUGMENTATIONS: {"image_size": 32},
                          IEBENCH: {"image_size": 32}},
        "model": {"depth": 10, "width": 8, "stem": "cifar", "act_dim": 16, "agg_layers": 1, "agg_heads": 2,
                  "pred_hidden": 64},
        "optim": {"warmup_steps": 2, "lr": 1e-3},
        "train": {"steps": 6, "batch_size": 8, "log_every": 2, "ckpt_every": 3},
        "eval": {"m_val": [1, 2], "train_sequences": 64, "test_sequences": 32, "linear_epochs": 3,
                 "mlp_epochs": 3, "mlp_hidden": 64, "batch_size": 32, "suites": ["linear_probe", "equivariance"]},
    },
    # The default: a few minutes on two CPU cores, enough to show learning against random initialisation.
    "cpu": {
        # Saccades: 32-px glimpses of 64-px scenes (96 in the paper): glimpses then overlap often enough that
        # the next one is predictable from the move, and position equivariance is learnt in 1500 steps.
        # Rotating objects: painted by surface direction (pose_paint), so pooled features at init already see some
        # of the pose and the predictor learns to use the rotation; without it the predictor ignores the rotation
        # at this budget and the encoder never becomes equivariant. Nuisances stay fresh every view (3DIEBench's
        # protocol: the encoder must discard them, so what is left to predict is the pose), and 20 categories keep
        # z_agg off its ceiling so that its rise with M_val can show (docs/results.md).
        "world": {"bank_objects": 1000, "bank_views": 8, "live_chunk": 8},
        "world_options": {OBJECTS: {"image_size": 32, "rotation_range": 0.785, "pose_paint": 1.0, "num_classes": 20},
                          SACCADES: {"scene_size": 64}, AUGMENTATIONS: {"image_size": 32},
                          IEBENCH: {"image_size": 32}},
        # Width 8 and 2000 steps cost what width 16 and 1500 did, and its random init reads no pose (relative
        # rotation R² 0.00 vs 0.13), so what the probe reads was learnt. The learning rate stays at its peak after
        # warm-up (as the official code's schedule does in effect): the cosine's tail spent the last third of a
        # short run learning little (R² 0.17 vs 0.23 at 1500 steps).
        "model": {"depth": 10, "width": 8, "stem": "cifar", "act_dim": 32, "agg_layers": 2, "agg_heads": 4,
                  "pred_hidden": 512, "tau_base": 0.99},
        "optim": {"lr": 2e-3, "final_lr": 2e-3, "weight_decay": 0.05, "warmup_steps": 100},
        "train": {"steps": 2000, "batch_size": 32, "channels_last": "on"},
        "eval": {"train_sequences": 6000, "test_sequences": 1000, "linear_epochs": 40, "mlp_epochs": 40,
                 "mlp_hidden": 256, "batch_size": 128, "suites": ["linear_probe", "equivariance", "action_use"]},
    },
    # The paper's 3DIEBench setting (Table 1): ResNet-18, 128x128, batch 512, M_tr=3; for a GPU.
    "paper": {
        # 12 views per object (3DIEBench ships 50): 41,920 x 12 views at 128² is a 25 GiB bank; 50 would be 103 GiB.
        "world": {"bank_objects": 41920, "bank_views": 12},
        "world_options": {OBJECTS: {"image_size": 128, "num_classes": 55}, AUGMENTATIONS: {"image_size": 128},
                          IEBENCH: {"image_size": 128}},
        "model": {},
        "optim": {"lr": 4e-4, "weight_decay": 1e-3, "warmup_steps": 1640},  # 20 epochs of 82 steps
        "train": {"steps": 82000, "batch_size": 512, "ckpt_every": 2000, "log_every": 50},
        "eval": {"m_val": [1, 2, 3, 4, 5, 6, 7, 8], "train_sequences": 41920, "test_sequences": 10552,
                 "linear_epochs": 300, "mlp_epochs": 300},
    },
}


def preset(name: str, env: str | None = None) -> Config:
    """A fresh Config from a named preset (``smoke``, ``cpu`` or ``paper``), optionally for world ``env``.

    The world options are the preset's for that world (``env``, else the default world); a world the preset does
    not list gets none, so it starts from its own defaults.
    """
    if name not in PRESETS:
        raise ConfigError(f"--preset: got {name!r}; allowed: one of {', '.join(map(repr, PRESETS))}")
    data = json.loads(json.dumps(PRESETS[name]))
    world_options = data.pop("world_options")
    data["preset"] = name
    cfg = from_dict(Config, data)
    cfg.world.env = env or cfg.world.env
    cfg.world.options = world_options.get(cfg.world.env, {})
    return cfg
