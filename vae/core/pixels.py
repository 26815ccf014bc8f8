"""Pixel scaling, in one place: 8-bit pixels k ∈ {0, …, 255} are read as k/255 ∈ [0, 1] wherever a float is needed
(the data modules' ``pixels="unit"``, every model's input, the pictures)."""

from __future__ import annotations

import torch
from torch import Tensor


def as_unit(x: Tensor) -> Tensor:
    """Images as floats in [0, 1]: uint8 pixels k become k/255, floats pass unchanged."""
    return x.float() / 255.0 if x.dtype == torch.uint8 else x
