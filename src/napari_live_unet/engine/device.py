"""Choosing the compute device."""

from __future__ import annotations

import torch

from .errors import InputError

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def available_devices() -> list[str]:
    """Devices usable on this machine, best first (for pickers and ``--help``)."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return [*found, "cpu"]


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N``/``mps`` into a usable device.

    Raises
    ------
    InputError
        For an unknown name, or a device this machine does not have.
    """
    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device(available_devices()[0])
    kind = name.split(":")[0]
    if kind not in DEVICE_CHOICES:
        raise InputError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if kind not in available_devices():
        raise InputError(
            f"device {name!r} is not available on this machine (available: "
            f"{', '.join(available_devices())}). Use --device auto to pick the best one."
        )
    if kind == "cuda" and ":" in name:
        index = int(name.split(":")[1])
        if index >= torch.cuda.device_count():
            raise InputError(f"device {name!r}: only {torch.cuda.device_count()} CUDA devices")
    return torch.device(name)
