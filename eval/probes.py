"""Probe heads fitted on frozen features: a linear classifier (top-1) and linear / MLP regressors (R²).

A linear regressor is fitted exactly: least squares (a ridge of ``RIDGE`` for numerical safety) in float64, the
optimum the paper's 50-epoch SGD head approaches; a 40-epoch Adam head stopped ~0.05 R² short of it on the colour
probe, for trained and random networks alike. Classifiers and MLP regressors train with Adam.

Everything runs on the device of the features, full tensors, no data loaders: the features of a whole
evaluation split fit in memory, so an epoch is a random permutation and a loop over mini-batches.
Every fit is deterministic given ``seed`` (head initialisation and batch order come from a private
generator; the global RNG is never touched).

Inputs are standardised with the *train* split's per-dimension mean and std; regression targets are
standardised the same way for training and de-standardised before scoring, so R² is in the target's own
units. Test metrics are read once: a classifier's after the last epoch (the paper); an MLP regressor's, with
``val_fraction``, from the epoch with the lowest loss on rows (or whole episodes) held out of the *train* split —
MLP heads over-fit small probe sets — never selected on the test split.

>>> x = torch.randn(512, 8); w = torch.randn(8, 3)
>>> fit_regressor(x[:400], x[:400] @ w, x[400:], x[400:] @ w, head="linear", hidden=0, epochs=50,
...               lr=1e-2, batch_size=64, seed=0)["r2"] > 0.99
True
"""

from __future__ import annotations

import math
from typing import Callable, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seqjepa.metrics import as_2d, r2_score

# Constant feature / target dimensions get this std, so they become (near) zero instead of NaN.
_MIN_STD = 1e-6
# Ridge of the exact linear fit, on standardised inputs: keeps collinear features (two views' z side by side)
# solvable; with thousands of rows it moves the colour R² by < 0.001 anywhere in 1e-3…10.
RIDGE = 1.0


def standardize(train: Tensor, test: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Scale both splits with the train split's per-dimension mean and std.

    Returns ``(train_std, test_std, mean, std)`` so predictions can be mapped back with ``p * std + mean``.

    >>> a, b, mean, std = standardize(torch.randn(10, 3) * 5 + 2, torch.randn(4, 3))
    >>> bool(a.mean(0).abs().max() < 1e-5)
    True
    """
    train, test = train.float(), test.float()
    mean = train.mean(0, keepdim=True)
    std = train.std(0, unbiased=False, keepdim=True).clamp_min(_MIN_STD)
    return (train - mean) / std, (test - mean) / std, mean, std


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()  # CPU: the same seed gives the same head and batch order on any device
    g.manual_seed(seed)
    return g


def _linear(in_dim: int, out_dim: int, g: torch.Generator) -> nn.Linear:
    # PyTorch's default nn.Linear init (uniform ±1/sqrt(fan_in)), drawn from our generator instead of the
    # global one (skip_init allocates without the default init) so probes neither depend on nor disturb the
    # caller's RNG state.
    layer = torch.nn.utils.skip_init(nn.Linear, in_dim, out_dim)
    bound = 1.0 / math.sqrt(in_dim)
    with torch.no_grad():
        layer.weight.uniform_(-bound, bound, generator=g)
        if layer.bias is not None:
            layer.bias.uniform_(-bound, bound, generator=g)
    return layer


def make_head(in_dim: int, out_dim: int, head: Literal["linear", "mlp"], hidden: int,
              g: torch.Generator) -> nn.Module:
    """A linear layer, or the official code's MLP: in -> hidden -> hidden -> out with ReLU."""
    if head == "linear":
        return _linear(in_dim, out_dim, g)
    if head == "mlp":
        return nn.Sequential(_linear(in_dim, hidden, g), nn.ReLU(), _linear(hidden, hidden, g), nn.ReLU(),
                             _linear(hidden, out_dim, g))
    raise ValueError(f"head: got {head!r}; allowed: 'linear' or 'mlp'")


def train_head(head: nn.Module, x: Tensor, y: Tensor, loss_fn, *, epochs: int, lr: float, batch_size: int,
               g: torch.Generator, val: tuple[Tensor, Tensor] | None = None,
               on_epoch: Callable[[], None] | None = None) -> int:
    """Adam (default betas, no weight decay) on shuffled mini-batches for ``epochs`` passes over ``x``; ``on_epoch``
    is called after each pass (progress of long fits).

    With ``val`` the head ends with the weights of the epoch whose validation loss was lowest (early stopping
    without stopping: the epoch count stays the protocol's); without it, with the last epoch's. Returns that epoch
    (1-based).
    """
    head.train()
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    n = x.shape[0]
    best, best_epoch, best_state = math.inf, epochs, None
    for epoch in range(1, epochs + 1):
        order = torch.randperm(n, generator=g).to(x.device)
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            loss = loss_fn(head(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if val is not None:
            head.eval()
            with torch.no_grad():
                val_loss = float(loss_fn(_predict(head, val[0]), val[1]))
            head.train()
            if val_loss < best:
                best, best_epoch = val_loss, epoch
                best_state = {k: v.clone() for k, v in head.state_dict().items()}
        if on_epoch is not None:
            on_epoch()
    if best_state is not None:
        head.load_state_dict(best_state)
    head.eval()
    return best_epoch


def hold_out(x: Tensor, y: Tensor, fraction: float, g: torch.Generator, groups: Tensor | None = None
             ) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
    """Set aside a random ``fraction`` of the rows, or of the ``groups`` (all rows of a group together), for
    validation: ``(x_fit, y_fit, (x_val, y_val))``; the last is ``None`` when fraction is 0. At least one row or
    group is held out and at least one kept."""
    if fraction <= 0:
        return x, y, None
    ids = torch.arange(x.shape[0]) if groups is None else groups.cpu()
    uniq = ids.unique()
    if len(uniq) < 2:
        what = "row(s)" if groups is None else "episode(s)"
        raise ValueError(f"val_fraction: got {fraction} with {len(uniq)} {what}; a validation split needs at "
                         "least 2 (set eval.val_fraction=0)")
    k = min(len(uniq) - 1, max(1, int(round(len(uniq) * fraction))))
    val = torch.isin(ids, uniq[torch.randperm(len(uniq), generator=g)[:k]]).to(x.device)
    return x[~val], y[~val], (x[val], y[val])


@torch.no_grad()
def _predict(head: nn.Module, x: Tensor, chunk: int = 65536) -> Tensor:
    # Chunked so very large test sets through a 1024-wide MLP do not spike memory.
    return torch.cat([head(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)])


def fit_classifier(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, *, num_classes: int,
                   epochs: int, lr: float, batch_size: int, seed: int,
                   on_epoch: Callable[[], None] | None = None) -> float:
    """Fit a linear classifier (cross-entropy, Adam) on standardised features; return test top-1 in %.
    ``on_epoch`` is called after every epoch.

    >>> x = torch.randn(400, 5, generator=torch.Generator().manual_seed(0)); y = (x[:, 0] > 0).long()
    >>> fit_classifier(x[:300], y[:300], x[300:], y[300:], num_classes=2, epochs=20, lr=1e-2,
    ...                batch_size=64, seed=0) > 90
    True
    """
    with torch.enable_grad():
        g = _generator(seed)
        xtr, xte, _, _ = standardize(x_train, x_test)
        head = make_head(xtr.shape[1], num_classes, "linear", 0, g).to(xtr.device)
        train_head(head, xtr, y_train.long().to(xtr.device), F.cross_entropy, epochs=epochs, lr=lr,
                   batch_size=batch_size, g=g, on_epoch=on_epoch)
    pred = _predict(head, xte).argmax(1)
    return float((pred == y_test.to(pred.device)).float().mean() * 100)


def fit_linear(x: Tensor, y: Tensor) -> Tensor:
    """Least-squares weights [D + 1, K] (bias last) of ``y`` [N, K] on standardised ``x`` [N, D], with a ridge of
    ``RIDGE`` on the weights (not the bias), solved in float64.

    >>> x = torch.randn(200, 3); w = fit_linear(x, x @ torch.tensor([[1.], [2.], [3.]]) + 4)
    >>> [round(v, 1) for v in w.flatten().tolist()]
    [1.0, 2.0, 3.0, 4.0]
    """
    a = torch.cat([x.double(), x.new_ones(x.shape[0], 1, dtype=torch.float64)], 1)
    reg = torch.full((a.shape[1],), RIDGE, dtype=torch.float64, device=a.device)
    reg[-1] = 0.0
    return torch.linalg.solve(a.T @ a + torch.diag(reg), a.T @ y.double())


def _apply_linear(w: Tensor, x: Tensor) -> Tensor:
    return (x.double() @ w[:-1] + w[-1]).float()


def fit_regressor(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, *,
                  head: Literal["linear", "mlp"], hidden: int, epochs: int, lr: float, batch_size: int,
                  seed: int, val_fraction: float = 0.0, groups: Tensor | None = None,
                  on_epoch: Callable[[], None] | None = None) -> dict[str, float]:
    """Fit a regression head on standardised targets and return test R² in the targets' units: ``"linear"``
    exactly (:func:`fit_linear`; ``epochs``, ``lr``, ``batch_size``, ``val_fraction`` do not apply), ``"mlp"``
    with Adam on the MSE.

    ``r2`` is the per-dimension R² averaged over dimensions (sklearn, the paper's number); ``r2_global`` is
    SIE's pooled ``1 - SSE/SST`` over all entries; ``epoch`` the epoch whose weights were scored (the one with
    the lowest loss on the held-out ``val_fraction`` of the train rows — or of the ``groups``, e.g. episodes, [N] —
    or the last when it is 0; None for the exact linear fit). ``on_epoch`` is called after every epoch.

    >>> x = torch.randn(300, 4)
    >>> out = fit_regressor(x[:200], x[:200, :2], x[200:], x[200:, :2], head="mlp", hidden=32,
    ...                     epochs=30, lr=1e-3, batch_size=32, seed=0)
    >>> sorted(out)
    ['epoch', 'r2', 'r2_global']
    """
    xtr, xte, _, _ = standardize(x_train, x_test)
    ytr, _, y_mean, y_std = standardize(as_2d(y_train), as_2d(y_test))
    if head == "linear":
        w, epoch = fit_linear(xtr, ytr.to(xtr.device)), None
        pred = _apply_linear(w, xte)
    else:
        with torch.enable_grad():
            g = _generator(seed)
            net = make_head(xtr.shape[1], ytr.shape[1], head, hidden, g).to(xtr.device)
            xfit, yfit, val = hold_out(xtr, ytr.to(xtr.device), val_fraction, g, groups)
            epoch = train_head(net, xfit, yfit, F.mse_loss, epochs=epochs, lr=lr, batch_size=batch_size, g=g,
                               val=val, on_epoch=on_epoch)
        pred = _predict(net, xte)
    pred = pred * y_std.to(xte.device) + y_mean.to(xte.device)
    target = as_2d(y_test).float().to(pred.device)
    return {"r2": float(r2_score(target, pred, "uniform")), "r2_global": float(r2_score(target, pred, "global")),
            "epoch": epoch}
