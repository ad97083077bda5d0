"""seq-JEPA (Ghaemi et al., NeurIPS 2025): encoder, action embedding, aggregator, predictor and EMA target.

One training sequence is M observed views x_1..x_M, a target view x_{M+1} and the relative actions a_1..a_M
(a_i maps view i to view i+1). With z_i = f(x_i) and e_i = emb(a_i) (paper eqs. 3-5):

    z_agg = g([AGG]; z_1⊕e_1, …, z_{M−1}⊕e_{M−1}, z_M⊕0)      # aggregator, read at the [AGG] position
    z_hat = h(z_agg ⊕ e_M)                                    # predictor
    loss  = 1 − cos(z_hat, sg(f̄(x_{M+1})))                    # f̄: EMA copy of f

The encoder outputs z_i are the equivariant representation, z_agg the invariant one (paper §1.3).

>>> import torch
>>> model = SeqJEPA(action_dim=4, depth=10, width=8, stem="cifar", act_dim=16, agg_layers=1, agg_heads=2,
...                 pred_hidden=32)
>>> views = torch.randint(0, 256, (4, 3, 3, 32, 32), dtype=torch.uint8)  # B=4, M=2 observed + 1 target
>>> out = model(views, torch.randn(4, 2, 4))
>>> out["loss"].backward(); model.update_target(tau_at(0, 100, 0.996))
>>> out["z"].shape, out["z_agg"].shape, out["z_hat"].shape
(torch.Size([4, 2, 64]), torch.Size([4, 80]), torch.Size([4, 64]))
>>> rebuilt = SeqJEPA(**model.hparams)  # what a checkpoint stores to rebuild the network
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from seqjepa.method import Method, Output

ActCond = Literal["both", "predictor", "transformer", "none"]
ACT_CONDS = ("both", "predictor", "transformer", "none")
ActionBN = Literal["3diebench", "augmentations", "saccades"]
ACTION_BNS = ("3diebench", "augmentations", "saccades")


def tau_at(step: int, total_steps: int, tau_base: float) -> float:
    """EMA momentum at ``step``: BYOL's cosine rise from ``tau_base`` (step 0) to 1 (last step).

    >>> tau_at(0, 10, 0.996), tau_at(10, 10, 0.996)
    (0.996, 1.0)
    """
    progress = min(max(step, 0), total_steps) / total_steps if total_steps > 0 else 1.0
    return 1.0 - (1.0 - tau_base) * (math.cos(math.pi * progress) + 1.0) / 2.0


class Aggregator(nn.Module):
    """The aggregator g: [AGG] token + post-norm transformer encoder + final LayerNorm → z_agg.

    As in the official code there is no positional encoding (order reaches the model only through the actions);
    ``pos_emb=True`` adds a learned one over at most ``max_len`` view tokens.
    """

    def __init__(self, *, d_model: int, layers: int, heads: int, ff_mult: int, dropout: float,
                 pos_emb: bool = False, max_len: int = 64):
        super().__init__()
        self.agg_token = nn.Parameter(torch.zeros(1, 1, d_model))  # zero-initialised, as the official code
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=ff_mult * d_model, dropout=dropout,
                                           batch_first=True)  # PyTorch defaults: ReLU, post-norm
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.max_len = max_len
        self.pos_emb = None
        if pos_emb:
            self.pos_emb = nn.Parameter(torch.zeros(1, max_len + 1, d_model))
            nn.init.trunc_normal_(self.pos_emb, std=0.02)

    def forward(self, tokens: torch.Tensor, *, return_attention: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """[B, M, d_model] tokens → z_agg [B, d_model] (and the [AGG] attention [B, M] if asked)."""
        B, M, _ = tokens.shape
        x = torch.cat([self.agg_token.expand(B, -1, -1), tokens], dim=1)
        if self.pos_emb is not None:
            if M > self.max_len:
                raise ValueError(f"sequence of {M} views is longer than the positional embedding ({self.max_len})")
            x = x + self.pos_emb[:, :M + 1]
        # The same loop nn.TransformerEncoder.forward runs (no mask, no nested tensors), written out so the last
        # layer's input is at hand for the attention map without touching the forward's numerics.
        for layer in self.transformer.layers:
            x_last, x = x, layer(x)
        z_agg = self.norm(x[:, 0])
        if not return_attention:
            return z_agg
        return z_agg, self.agg_attention(x_last)

    @torch.no_grad()
    def agg_attention(self, x: torch.Tensor) -> torch.Tensor:
        """The last layer's [AGG]-query attention over the view tokens, averaged over heads: [B, M], rows sum to 1.

        The [AGG]→[AGG] weight is dropped and the rest renormalised, so the numbers are each view's share.
        Attention dropout is switched off here (it would make the rows not sum to 1 and draw random numbers).
        """
        attn = self.transformer.layers[-1].self_attn
        was_training = attn.training
        attn.train(False)
        try:
            _, w = attn(x, x, x, need_weights=True, average_attn_weights=True)  # [B, M+1, M+1]
        finally:
            attn.train(was_training)
        w = w[:, 0, 1:].float()
        return w / w.sum(dim=-1, keepdim=True)


class SeqJEPA(Method):
    """The seq-JEPA network (paper §2.2; official ``SeqJEPA_Transforms``).

    ``act_cond`` picks where actions enter (paper Table 4): "both" (tokens and predictor, the paper's model),
    "predictor" (token action slots zeroed), "transformer" (predictor action slot zeroed) or "none" (no action
    pathway: tokens are z_i alone and the predictor sees z_agg alone, as the official ``act_cond=0``).
    Views are uint8 [B, T, 3, H, W]; ``mean``/``std`` normalise them after scaling to [0, 1].

    ``action_bn`` picks how :meth:`forward` batches the actions through the action BatchNorm. In train mode each
    call normalises its rows with their own statistics and updates the running ones, so which rows share a call,
    and in which order the calls come, change the embeddings and the statistics eval mode later uses. The
    official code (``seq-jepa/src/models.py``) does it one of three ways, by dataset:

    ==================  ===========================================================================================
    "3diebench"         ``SeqJEPA_Transforms`` given ``rel_latents`` (3DIEBench): first e(a_M) alone (B rows),
                        then a_1..a_M as one batch (B·M rows), the last token's slot zeroed after projection
    "augmentations"     ``SeqJEPA_Transforms`` without ``rel_latents`` (CIFAR-100, Tiny ImageNet): as "3diebench"
                        but the last token's row is a zero action before projection, so it joins the statistics
    "saccades"          ``SeqJEPA_PLS`` (STL-10, ImageNet): first the B·M token rows (last one a zero action),
                        then e(a_M) alone (B rows)
    ==================  ===========================================================================================

    Eval mode does not depend on it. Code that embeds actions itself (:meth:`embed_actions`) batches as it likes.
    """

    predicts = True
    no_decay = ("agg_token", "pos_emb")
    model_settings = ("depth", "width", "stem", "act_dim", "agg_layers", "agg_heads", "agg_ff_mult", "dropout",
                      "pos_emb", "pred_hidden", "act_cond", "ema")

    def __init__(self, *, action_dim: int, depth: Literal[10, 18, 34] = 18, width: int = 64,
                 stem: Literal["imagenet", "cifar"] = "imagenet", act_dim: int = 128, agg_layers: int = 3,
                 agg_heads: int = 4, agg_ff_mult: int = 4, dropout: float = 0.1, pos_emb: bool = False,
                 pred_hidden: int = 1024, act_cond: ActCond = "both", ema: bool = True,
                 mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.25, 0.25, 0.25),
                 action_bn: ActionBN = "3diebench"):
        if act_cond not in ACT_CONDS:
            raise ValueError(f"act_cond: got {act_cond!r}; allowed: one of {', '.join(map(repr, ACT_CONDS))}")
        if action_bn not in ACTION_BNS:
            raise ValueError(f"action_bn: got {action_bn!r}; allowed: one of {', '.join(map(repr, ACTION_BNS))}")
        if act_cond != "none" and (action_dim < 1 or act_dim < 1):
            raise ValueError(f"action_dim and act_dim must be >= 1 with act_cond={act_cond!r}; "
                             f"got {action_dim} and {act_dim}")
        super().__init__(depth=depth, width=width, stem=stem, mean=mean, std=std)
        self.act_cond = act_cond
        self.action_bn = action_bn
        D = self.dim
        self.act_dim = act_dim if act_cond != "none" else 0  # width of the action slot of tokens and predictor
        self.d_model = D + self.act_dim
        if self.d_model % agg_heads:
            raise ValueError(f"agg_heads={agg_heads} must divide the token width d_model = {D} (8·width) + "
                             f"{self.act_dim} (act_dim) = {self.d_model}")

        self.add_target("encoder", ema)
        if act_cond != "none":
            # No affine: BN only standardises the projected actions (official action_proj).
            self.action_embed = nn.Sequential(nn.Linear(action_dim, act_dim, bias=False),
                                              nn.BatchNorm1d(act_dim, affine=False))
        self.aggregator = Aggregator(d_model=self.d_model, layers=agg_layers, heads=agg_heads, ff_mult=agg_ff_mult,
                                     dropout=dropout, pos_emb=pos_emb)
        self.predictor = nn.Sequential(nn.Linear(self.d_model + self.act_dim, pred_hidden, bias=False),
                                       nn.BatchNorm1d(pred_hidden), nn.ReLU(inplace=True),
                                       nn.Linear(pred_hidden, D))

    @property
    def agg_dim(self) -> int:
        return self.d_model

    # -- the pieces, usable on their own by evaluation code ----------------------------------------------------

    def embed_actions(self, actions: torch.Tensor) -> torch.Tensor | None:
        """[B, T, A] actions → e [B, T, act_dim]; None when act_cond == "none".

        All B·T rows go through BatchNorm as one batch.
        """
        if self.action_embed is None:
            return None
        a = rearrange(actions, "b t a -> (b t) a").to(self.mean.device, torch.float32)
        return rearrange(self.action_embed(a), "(b t) k -> b t k", b=actions.shape[0])

    def embed_sequence(self, actions: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """[B, M, A] actions → the token embeddings e [B, M, act_dim] and the predictor's e(a_M) [B, act_dim],
        batched through the action BatchNorm as the official model does (see ``action_bn``); (None, None) when
        act_cond == "none". Row M of e is never read (the last token's action slot is zero)."""
        if self.action_embed is None:
            return None, None
        a = actions.to(self.mean.device, torch.float32)
        tokens = a
        if self.action_bn != "3diebench":
            # The official augmentation and saccade paths form the token actions as differences of the observed
            # views' absolute latents, so the last observed view's row is a zero action, and it is in the batch.
            tokens = torch.cat([a[:, :-1], a.new_zeros(a.shape[0], 1, a.shape[2])], dim=1)
        if self.action_bn == "saccades":
            e = self.embed_actions(tokens)
            return e, self.action_embed(a[:, -1])
        e_next = self.action_embed(a[:, -1])
        return self.embed_actions(tokens), e_next

    def aggregate(self, z: torch.Tensor, e: torch.Tensor | None = None, *, return_attention: bool = False
                  ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """z [B, M, D] and action embeddings e [B, ≥M−1, act_dim] → z_agg [B, d_model].

        Token i < M is z_i ⊕ e_i; token M is z_M ⊕ 0 (its action a_M goes to the predictor), so only the first
        M−1 rows of e are read. e=None (or act_cond "predictor") fills every action slot with zeros.
        With ``return_attention`` also returns the [AGG] token's last-layer attention over the views, [B, M].
        """
        B, M, _ = z.shape
        if self.act_cond == "none":
            tokens = z
        else:
            slots = z.new_zeros(B, M, self.act_dim)
            if e is not None and self.act_cond in ("both", "transformer") and M > 1:
                if e.shape[1] < M - 1:
                    raise ValueError(f"aggregate: {M} views need >= {M - 1} action embeddings, got {e.shape[1]}")
                slots = torch.cat([e[:, :M - 1], e.new_zeros(B, 1, self.act_dim)], dim=1)
            tokens = torch.cat([z, slots], dim=-1)
        return self.aggregator(tokens, return_attention=return_attention)

    def predict(self, z_agg: torch.Tensor, e_next: torch.Tensor | None = None) -> torch.Tensor:
        """z_agg [B, d_model] and e(a_M) [B, act_dim] → z_hat [B, D]; e_next=None means a zero action slot."""
        if self.act_cond == "none":
            return self.predictor(z_agg)
        if e_next is None or self.act_cond == "transformer":
            e_next = z_agg.new_zeros(z_agg.shape[0], self.act_dim)
        return self.predictor(torch.cat([z_agg, e_next], dim=-1))

    # -- training ------------------------------------------------------------------------------------------------

    def forward(self, views: torch.Tensor, actions: torch.Tensor) -> Output:
        """views uint8 [B, M+1, 3, H, W] (the last is the target), actions [B, M, A] (a_i: view i → i+1).

        Returns loss (scalar), z [B, M, D] (online, with grad), z_agg [B, d_model], z_hat [B, D], target [B, D].
        """
        M = views.shape[1] - 1
        if M < 1:
            raise ValueError(f"need at least 2 views (1 observed + 1 target); got {views.shape[1]}")
        if actions.shape[:2] != (views.shape[0], M):
            raise ValueError(f"actions must be [B, M={M}, A] for {M + 1} views; got {tuple(actions.shape)}")
        # The online encoder never sees the target view: the target comes from encode_target (EMA copy, or the
        # online encoder under no_grad), whose BatchNorm then normalises the target views as a batch of their own.
        z = self.encode(views[:, :M])
        target = self.encode_target(views[:, M:])[:, 0]
        e, e_next = self.embed_sequence(actions)
        z_agg = self.aggregate(z, e)
        z_hat = self.predict(z_agg, e_next)
        # float32 so the loss is safe under bf16 autocast.
        loss = 1.0 - F.cosine_similarity(z_hat.float(), target.float(), dim=-1).mean()
        return Output(loss=loss, z=z, z_agg=z_agg, z_hat=z_hat, target=target)


@contextlib.contextmanager
def evaluating(*modules: nn.Module):
    """Every module in eval mode inside the block; afterwards each submodule gets back its own mode."""
    modes = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def derangement(n: int, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of range(n) without fixed points (n >= 2): one cycle through a random order."""
    order = torch.randperm(n, generator=generator, device=generator.device)
    other = torch.empty_like(order)
    other[order] = order.roll(-1)
    return other


def action_use(model: SeqJEPA, views: torch.Tensor, actions: torch.Tensor, shuffled: torch.Tensor, *,
               all_shuffled: bool = False, out: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Does a seq-JEPA predictor use the action? Per-sequence losses 1 − cos(ẑ, target) [B] with the true actions
    ("true"), with the last action a_M (the one the predictor is conditioned on) replaced by ``shuffled[:, -1]``,
    another sequence's, the tokens' actions unchanged ("last shuffled"), and optionally with every action replaced
    by ``shuffled``'s ("all shuffled"). ``out`` is ``model(views, actions)`` if the caller already has it.

    The ratio of the "last shuffled" and "true" means is the action use: ≈ 1 when the predictor ignores where the
    next view is. Call it with the model in eval mode: the action BatchNorm then embeds each
    row on its own, so swapping a_M changes only the predictor's input, and the encoders run once.
    """
    out = model(views, actions) if out is None else out
    target = out["target"].float()

    def loss(z_hat: torch.Tensor) -> torch.Tensor:
        return 1.0 - F.cosine_similarity(z_hat.float(), target, dim=-1)  # SeqJEPA.forward's loss, per sequence

    e_last = model.embed_actions(shuffled[:, -1:])
    losses = {"true": loss(out["z_hat"]),
              "last shuffled": loss(model.predict(out["z_agg"], None if e_last is None else e_last[:, 0]))}
    if all_shuffled:
        e = model.embed_actions(shuffled)
        losses["all shuffled"] = loss(model.predict(model.aggregate(out["z"], e), None if e is None else e[:, -1]))
    return losses


def uses_next_action(model: nn.Module) -> bool:
    """Whether the model's predictor is conditioned on the next action: seq-JEPA with act_cond both or predictor
    (with "transformer" its action slot is zero, with "none" there is none; baselines have no such predictor)."""
    return isinstance(model, SeqJEPA) and model.act_cond in ("both", "predictor")
