"""What every evaluation suite shares: the frozen-feature context, probe wrappers that attach a protocol, data.

A suite module (``eval/linear_probe.py`` …) exposes ``NAME``, ``views_needed(cfg)``, ``skip_reason(ctx)`` and
``run(ctx) -> {metric name: {"value": float, ..., "protocol": {...}}}``; :func:`eval.suite.evaluate` builds one
:class:`Context` (features of fresh train and test sequences) and hands it to each selected suite.

>>> ctx = Context(model, world_tr, world_te, cfg, device="cpu", train=feats_tr, test=feats_te,  # doctest: +SKIP
...               base=base_protocol(common_protocol(world_tr, world_te, cfg, steps=6, bank=False)))
>>> classify(ctx.train["z"][:, 0], ctx.train["labels"], ctx.test["z"][:, 0], ctx.test["labels"], ctx,  # doctest: +SKIP
...          views=1, inputs="encoder output")["value"]
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import TYPE_CHECKING, Callable, Iterator

import torch
from torch import Tensor, nn

from envs.base import World
from envs.sequences import Batch, ViewBank, random_policy, rollout
from seqjepa.model import evaluating

from .features import collect
from .probes import RIDGE, fit_classifier, fit_regressor

if TYPE_CHECKING:
    from seqjepa.config import EvalConfig

# Test data use a different stream than train data, so a world without a split still gets disjoint samples.
TEST_SEED_OFFSET = 1

INPUT_STANDARDISATION = "per-dimension, with the train split's mean and std (applied to test too)"
TARGET_STANDARDISATION = ("per-dimension, with the train split's mean and std for fitting; predictions are "
                          "mapped back and R² is computed in the target's original units")
R2_DEFINITION = ("r2 (= value): per-dimension R² averaged over output dimensions (sklearn uniform_average, "
                 "the paper's number); r2_global: 1 - SSE/SST over all entries flattened, SST about the grand "
                 "mean (SIE)")
CHANCE_R2 = "R² of predicting the train mean for every test row: 0 (slightly below on a finite test split)"
BASE_KEYS = ("sampling", "train_sequences", "test_sequences", "seed", "input_standardisation", "scoring")


@dataclasses.dataclass
class Context:
    """Everything a suite reads: the frozen model, the worlds, the config and the features of both splits."""
    model: nn.Module
    world_train: World
    world_test: World
    cfg: EvalConfig
    device: torch.device | str
    train: dict                      # sample_features() of the train split
    test: dict                       # and of the test split
    base: dict                       # protocol entries every number of this call carries
    autocast: bool = False
    bank_train: ViewBank | None = None
    bank_test: ViewBank | None = None
    world_ood: World | None = None   # the same world rendering out-of-distribution poses (ood suite)
    bank_ood: ViewBank | None = None
    log: Callable[[str], None] = print
    tick: Callable[[str], None] = lambda note: None  # progress: a probe epoch or a batch done, and what runs

    @property
    def m_val(self) -> list[int]:
        return sorted(set(self.cfg.m_val))


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode (BatchNorm reads its running statistics, never updates them) and no gradient."""
    with evaluating(model), torch.no_grad():
        yield model


# -- data ----------------------------------------------------------------------------------------------------------


def draw(world: World, bank: ViewBank | None, n: int, steps: int, gen: torch.Generator) -> Batch:
    """``n`` sequences of ``steps`` views: distinct random views from ``bank``, or live under the random policy."""
    return bank.sample(world, n, steps, gen) if bank is not None else rollout(world, random_policy, n, steps, gen)


def generator_for(world: World, bank: ViewBank | None, seed: int) -> torch.Generator:
    gen = torch.Generator(device=bank.views.device if bank is not None else world.device)
    gen.manual_seed(seed)
    return gen


def sample_features(model: nn.Module, world: World, bank: ViewBank | None, n: int, steps: int, seed: int,
                    cfg: EvalConfig, m_val: list[int], device: torch.device | str, autocast: bool,
                    tick: Callable[[], None] | None = None) -> dict:
    """Draw ``n`` sequences of ``steps`` views in chunks of ``cfg.batch_size`` and collect their features;
    ``tick`` is called after each chunk.

    Features are collected chunk by chunk so the views never all sit in memory at once. Returns ``z`` [N, T, D],
    ``z_agg`` {M: [N, d]}, ``labels`` [N], ``params`` [N, T, P], ``episodes`` [N], all on the CPU.
    """
    gen = generator_for(world, bank, seed)
    parts = []
    for start in range(0, n, cfg.batch_size):
        k = min(cfg.batch_size, n - start)
        parts.append(collect(model, [draw(world, bank, k, steps, gen)], m_val=m_val, device=device,
                             autocast=autocast))
        if tick is not None:
            tick()
    return {"z": torch.cat([p["z"] for p in parts]),
            "z_agg": {m: torch.cat([p["z_agg"][m] for p in parts]) for m in parts[0]["z_agg"]},
            "labels": torch.cat([p["labels"] for p in parts]),
            "params": torch.cat([p["params"] for p in parts]),
            "episodes": torch.cat([p["episodes"] for p in parts])}


def pair(z: Tensor) -> Tensor:
    """[N, T, D] -> [N, 2D]: the encoder outputs of the first two views side by side (official probe input)."""
    return torch.cat([z[:, 0], z[:, 1]], dim=1)


def relative(world: World, p_from: Tensor, p_to: Tensor) -> Tensor:
    """``world.relative`` on the world's device, returned as float on the CPU."""
    return world.relative(p_from.to(world.device), p_to.to(world.device)).float().cpu()


def actions_of(world: World, params: Tensor) -> Tensor:
    """The actions between consecutive views [N, T-1, A], exactly as batches carry them."""
    return relative(world, params[:, :-1], params[:, 1:])


def absolute_targets(world: World, params: Tensor) -> dict[str, Tensor]:
    """``world.absolute`` of one view per sequence, each target as float [N, k] on the CPU."""
    out = world.absolute(params.to(world.device))
    return {k: (v.unsqueeze(1) if v.ndim == 1 else v).float().cpu() for k, v in out.items()}


# -- probes with their protocol --------------------------------------------------------------------------------------


def classify(x_tr: Tensor, y_tr: Tensor, x_te: Tensor, y_te: Tensor, ctx: Context, *, views: int,
             inputs: str, metric: str = "") -> dict:
    """Linear-probe top-1 (%) with its protocol; ``metric`` (its JSON key) names the fit in the progress."""
    cfg, dev = ctx.cfg, ctx.device
    num_classes = ctx.world_train.num_classes
    acc = fit_classifier(x_tr.to(dev), y_tr.to(dev), x_te.to(dev), y_te.to(dev),
                         num_classes=num_classes, epochs=cfg.linear_epochs, lr=cfg.lr,
                         batch_size=cfg.batch_size, seed=cfg.seed,
                         on_epoch=lambda: ctx.tick(f"fitting {metric}"))
    protocol = {"probe": "linear classifier", "metric": "top-1 accuracy (%) on the test split", "unit": "top-1 %",
                "input": inputs, "input_dim": int(x_tr.shape[1]), "target": "class label",
                "num_classes": int(num_classes), "chance": 100.0 / num_classes,
                "optimizer": "Adam (default betas, no weight decay)", "loss": "cross-entropy",
                "epochs": cfg.linear_epochs, "lr": cfg.lr, "batch_size": cfg.batch_size, "views": views, **ctx.base}
    return {"value": acc, "protocol": protocol}


def regress(x_tr: Tensor, y_tr: Tensor, x_te: Tensor, y_te: Tensor, head: str, ctx: Context, *, views: int,
            inputs: str, target: str, metric: str = "") -> dict:
    """R² of a linear (exact least squares) or MLP regression head with its protocol; ``metric`` (its JSON key)
    names the fit in the progress.

    With ``cfg.val_fraction`` the scored epoch is picked on whole episodes (objects, images) held out of the train
    split: the test split holds unseen episodes, and rows of a seen one would reward memorising it.
    """
    cfg, dev = ctx.cfg, ctx.device
    epochs, hidden = cfg.mlp_epochs, cfg.mlp_hidden if head == "mlp" else 0
    r2 = fit_regressor(x_tr.to(dev), y_tr.to(dev), x_te.to(dev), y_te.to(dev), head=head, hidden=hidden,
                       epochs=epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed,
                       val_fraction=cfg.val_fraction, groups=ctx.train.get("episodes"),
                       on_epoch=lambda: ctx.tick(f"fitting {metric}"))
    probe = (f"MLP regressor {x_tr.shape[1]}-{hidden}-{hidden}-{y_tr.shape[1]} (ReLU)" if head == "mlp"
             else f"linear regressor {x_tr.shape[1]}-{y_tr.shape[1]}")
    protocol = {"probe": probe, "head": head, "metric": "R² on the test split", "unit": "R²",
                "r2_definition": R2_DEFINITION, "chance": 0.0, "chance_definition": CHANCE_R2, "input": inputs,
                "input_dim": int(x_tr.shape[1]),
                "target": target, "target_dim": int(y_tr.shape[1]), "views": views, **ctx.base,
                "target_standardisation": TARGET_STANDARDISATION}
    if head == "mlp":
        protocol |= {"hidden": hidden, "optimizer": "Adam (default betas, no weight decay)",
                     "loss": "MSE on standardised targets", "epochs": epochs, "lr": cfg.lr,
                     "batch_size": cfg.batch_size, "epoch_scored": r2["epoch"]}
    else:
        protocol |= {"optimizer": f"exact least squares in float64, ridge {RIDGE} on the weights",
                     "loss": "MSE on standardised targets",
                     "scoring": "test metrics read once, from the exact fit on the whole train split"}
    return {"value": r2["r2"], "r2": r2["r2"], "r2_global": r2["r2_global"], "protocol": protocol}


def common_protocol(world_train: World, world_test: World, cfg: EvalConfig, *, steps: int, bank: bool,
                    autocast: bool) -> dict:
    """What every number of one evaluate() call shares."""
    return {
        "world_train": world_name(world_train), "world_test": world_name(world_test),
        "sampling": "bank: distinct random views" if bank else "live: random policy",
        "views_per_sequence": steps, "m_val": sorted(set(cfg.m_val)),
        "train_sequences": cfg.train_sequences, "test_sequences": cfg.test_sequences,
        "seed": cfg.seed, "test_data_seed": cfg.seed + TEST_SEED_OFFSET,
        "features": "frozen model in eval mode (BatchNorm running statistics used, not updated; no dropout), "
                    "no gradient" + (", bf16 autocast" if autocast else ", float32"),
        "input_standardisation": INPUT_STANDARDISATION,
        "scoring": ("test metrics read once: classifiers after the last epoch; regression heads from the epoch with "
                    f"the lowest loss on the sequences of {cfg.val_fraction:.0%} of the train episodes, held out "
                    "(never selected on the test split)" if cfg.val_fraction > 0 else
                    "test metrics read once after the last epoch (no selection on the test split)"),
        "val_fraction": cfg.val_fraction,
        "linear_epochs": cfg.linear_epochs, "mlp_epochs": cfg.mlp_epochs, "mlp_hidden": cfg.mlp_hidden,
        "lr": cfg.lr, "batch_size": cfg.batch_size,
    }


def base_protocol(common: dict) -> dict:
    """The entries of :func:`common_protocol` repeated in every metric's own protocol."""
    return {k: common[k] for k in BASE_KEYS}


def world_name(world: World) -> str:
    opts = getattr(world, "options", None)
    split, ood = getattr(opts, "split", None), getattr(opts, "ood", False)
    name = type(world).__name__
    tags = ([f"split={split}"] if split is not None else []) + (["ood=True"] if ood else [])
    return f"{name} ({', '.join(tags)})" if tags else name
