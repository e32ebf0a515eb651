"""One place that turns a device name ("auto", "cpu", "cuda", "cuda:N", "mps") into a torch.device."""
from __future__ import annotations

import torch

from .errors import UserError

DEVICE_HELP = "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps"


def mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(name: str, setting: str = "device") -> torch.device:
    """The device called `name`, checked to exist here; `setting` names the flag or field in errors."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise UserError(f"{setting}: unknown device {name!r} (use {DEVICE_HELP})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{setting} is {name!r} but CUDA is not available here (use auto or cpu)")
    if device.type == "mps" and not mps_available():
        raise UserError(f"{setting} is {name!r} but MPS is not available here (use auto or cpu)")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{setting}: unsupported device {name!r} (use {DEVICE_HELP})")
    return device
