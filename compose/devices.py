"""Devices: a requested device checked against what this torch can use.

One message for every entry point that takes ``device=`` (`compose.sample`, the adapters'
`load`): a name torch does not know ('gpu') and a device this build cannot use ('cuda' on a
CPU-only torch) are ValueErrors that say what to do instead.
"""
from __future__ import annotations

import torch


def available_device(device) -> torch.device:
    """`device` as a torch.device this torch can place tensors on, or one clear ValueError."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device: {device!r} is not a torch device (e.g. 'cpu', 'cuda', "
                         "'cuda:1')") from None
    try:
        torch.empty(0, device=device)
    except (AssertionError, RuntimeError) as err:
        build = (f"this torch ({torch.__version__}) was built without CUDA"
                 if device.type == "cuda" and torch.version.cuda is None
                 else f"this torch ({torch.__version__}) cannot use it: {str(err).strip().splitlines()[0]}")
        raise ValueError(f"device: {str(device)!r} is not available: {build}. Sample on the CPU "
                         "(device='cpu', with a CPU generator torch.Generator()), or install a "
                         f"torch build with {device.type} support") from None
    return device
