"""Where and how a run computes: the device, and whether bf16 autocast pays off there."""

from __future__ import annotations

import torch

from .options import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device: got {name!r}; allowed: auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device: got {name!r} but CUDA is not available; use cpu or auto")
    return device


def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            return "amx_bf16" in fh.read()
    except OSError:
        return False


def use_bf16(setting: str, device: torch.device) -> bool:
    """bf16 autocast pays off on CUDA and on CPUs with AMX; elsewhere it is slower than fp32."""
    if setting != "auto":
        return setting == "on"
    return device.type == "cuda" or cpu_has_amx()


def use_channels_last(setting: str, bf16: bool) -> bool:
    """``train.channels_last``: on, off, or auto = with bf16 autocast (where its convolutions gain from it)."""
    return bf16 if setting == "auto" else setting == "on"
