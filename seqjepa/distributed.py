"""Distributed training under torchrun: process group, rank-0 helpers, reductions, data streams, SyncBatchNorm.

    torchrun --standalone --nproc_per_node=8 run.py train --preset paper           # one node, 8 GPUs
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 \\
        --rdzv_id=seqjepa run.py train --preset paper                              # on each of two nodes

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; :func:`setup` sees them and joins the process group (NCCL on CUDA,
gloo on CPU). Without them every helper here is the single-process identity, so the trainer has one code path.

What the trainer does with these (``seqjepa/train.py``): the model is wrapped in DistributedDataParallel, so every
rank holds the same parameters and each applies the same EMA update to its target; ``train.batch_size`` is the
*global* batch, each rank drawing ``batch_size / world_size`` sequences from its own stream (:func:`stream_seed`);
metrics are averaged over ranks when they are logged; TensorBoard, console output and checkpoints are rank 0's.

Unlike the official code's ``gather_from_all`` (plain ``all_gather`` into fresh buffers: no gradient),
:func:`gather_with_grad` sends each rank its slice of the gradient back, so contrastive and variance/covariance
losses are trained over the global batch.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def launched() -> bool:
    """True when started by torchrun (or any launcher that sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    """Rank 0: the process that logs, writes TensorBoard and saves checkpoints."""
    return rank() == 0


def setup(device: torch.device, timeout_min: float | None = None) -> torch.device:
    """Join torchrun's process group if launched by it (idempotent) and return this process's device.

    Under torchrun a CUDA device becomes ``cuda:LOCAL_RANK``; the backend is NCCL on CUDA and gloo on CPU. The
    timeout (``SEQJEPA_DIST_TIMEOUT_MIN``, default 60 min) must cover rank 0 rendering the view bank while the
    other ranks wait for it.
    """
    if not launched():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", local_rank())
        torch.cuda.set_device(device)
    if not is_initialized():
        minutes = timeout_min or float(os.environ.get("SEQJEPA_DIST_TIMEOUT_MIN", 60))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(minutes=minutes),
                                device_id=device if device.type == "cuda" else None)
        atexit.register(teardown)  # also when a rank leaves with an error
    return device


def teardown() -> None:
    if is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. renders and caches the view bank); the others then run it (and load)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (a picklable object: a run folder name, a dict)."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` when not distributed)."""
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(x: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over ranks (a new tensor; ``x`` when not distributed). No gradient."""
    if not is_initialized() or world_size() == 1:
        return x
    y = x.detach().clone()
    dist.all_reduce(y)
    return y / world_size()


def all_reduce_min(x: torch.Tensor) -> torch.Tensor:
    """The element-wise minimum of ``x`` over ranks (a new tensor; ``x`` when not distributed)."""
    if not is_initialized() or world_size() == 1:
        return x
    y = x.detach().clone()
    dist.all_reduce(y, op=dist.ReduceOp.MIN)
    return y


def average_gradients(module: nn.Module) -> None:
    """Average the gradients of ``module`` over ranks in one flat all-reduce (for small modules outside DDP,
    like the online probes). Every rank must hold gradients for the same parameters."""
    if not is_initialized() or world_size() == 1:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world_size()
    for g, avg in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        g.copy_(avg)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums each slice's gradient over ranks and returns this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)  # gloo has no reduce_scatter; the gathered rows are small
        return grad[rank() * ctx.rows:(rank() + 1) * ctx.rows]


class _AllReduceWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.contiguous().clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


@torch.compiler.disable  # a graph break under torch.compile: the collective runs eagerly
def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` [N, …] from every rank along dim 0 *with* gradients; ``x`` itself when not distributed.

    Every rank must pass the same N. The backward pass sums each slice's gradient over ranks and hands it to the
    rank that owns the slice (what ``torch.distributed.nn.functional.all_gather`` does; that one is deprecated
    in torch 2.13 and refuses to run under torch.compile). So when every rank computes the same loss over the
    gathered batch, its own rows receive world_size × the gradient of one process computing that loss alone,
    which DDP's averaging over ranks divides back.
    """
    if not is_initialized() or world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


@torch.compiler.disable
def all_reduce_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks, differentiable (the backward pass sums the gradients over ranks too)."""
    if not is_initialized() or world_size() == 1:
        return x
    return _AllReduceWithGrad.apply(x)


# -- data ------------------------------------------------------------------------------------------------------


def stream_seed(seed: int, rank: int, step: int = 0) -> int:
    """The seed of rank ``rank``'s data stream (and torch RNG) for a run seeded ``seed``, started at ``step``.

    A fresh run's rank 0 uses ``seed`` itself, so one process draws exactly what it always has; every other
    (rank, step) pair gets a hash of (seed, step, rank). ``step > 0`` is used when a run resumes with a different
    number of processes: the saved per-rank streams no longer map onto the ranks, so each rank starts a new one.
    """
    if rank == 0 and step == 0:
        return seed
    digest = hashlib.sha256(f"seqjepa-stream/{seed}/{step}/{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def shard(batch: Any) -> Any:
    """This rank's contiguous slice (along dim 0) of every tensor of a dataclass batch; the batch if not
    distributed. Rank r gets rows [r·B/N, (r+1)·B/N)."""
    if not is_initialized() or world_size() == 1:
        return batch
    n, r = world_size(), rank()

    def part(t: torch.Tensor) -> torch.Tensor:
        size = t.shape[0] // n
        return t[r * size:(r + 1) * size]

    return dataclasses.replace(batch, **{f.name: part(getattr(batch, f.name)) for f in dataclasses.fields(batch)})


def param_digest(module: nn.Module) -> str:
    """A hash of every parameter's bytes: equal on every rank as long as the replicas are identical."""
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# -- BatchNorm over the global batch ---------------------------------------------------------------------------


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose batch statistics are taken over every rank's batch, on any device (torch's SyncBatchNorm
    only runs on GPUs). Used for ``train.sync_batchnorm`` on CPU (gloo); CUDA uses ``nn.SyncBatchNorm``.

    Two differentiable all-reduces per call: the mean, then the biased variance about it (as a single process
    computes them), in float32. In eval mode, or when not distributed, it is plain BatchNorm. Its state dict has
    BatchNorm's keys, so checkpoints move freely between the two.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_initialized() and world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0] + list(range(2, x.dim()))
        shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
        xf = x.float()
        local_count = xf.new_full((1,), float(xf.numel() // xf.shape[1]))
        sums = all_reduce_with_grad(torch.cat([xf.sum(dims), local_count]))
        mean, count = sums[:-1] / sums[-1], sums[-1]
        centred = xf - mean.view(shape)
        var = all_reduce_with_grad((centred * centred).sum(dims)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                unbiased = var.detach() * count / (count - 1).clamp(min=1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm of ``module`` by one that normalises over the global batch: ``nn.SyncBatchNorm``
    on CUDA, :class:`GlobalBatchNorm` elsewhere. Parameters and buffers are kept (the same tensors)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        out = GlobalBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
        if module.affine:
            out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device))
    return out


def earliest(step: torch.Tensor) -> torch.Tensor:
    """The smallest non-negative value of a scalar step over ranks, or -1 if every rank holds -1 (e.g. the first
    step whose loss was not finite, -1 meaning none)."""
    if not is_initialized() or world_size() == 1:
        return step
    never = torch.full_like(step, torch.iinfo(step.dtype).max)
    first = all_reduce_min(torch.where(step < 0, never, step))
    return torch.where(first == never, torch.full_like(step, -1), first)


class Silent:
    """Stands in for rank 0's SummaryWriter on the other ranks: every method call does nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None
