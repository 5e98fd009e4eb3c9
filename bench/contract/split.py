"""``Split``: one split of a dataset, resident on a device (a leaf module: torch only).

Kept apart from ``bench.contract.interface`` so the data, training and pretraining modules can
use it without importing the method interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F

SPLIT_NAMES = ("train", "val", "test")
"""The three splits of every dataset, in the order loaders return them."""


@dataclass(frozen=True, eq=False)
class Split:
    """One split of a dataset, resident on a device.

    ``x`` is ``[N, C, H, W]``: float32 already normalised, or uint8 (0..255) that
    ``batch`` normalises with ``mean``/``std`` after scaling to [0, 1]. Images stored at
    another resolution than ``input_size`` are resized per batch on the device.
    ``flip_ok`` says whether horizontal flips preserve labels (False for digits).
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    input_size: int
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    flip_ok: bool = True

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def device(self) -> torch.device:
        return self.x.device

    def batch(self, idx: torch.Tensor | slice) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (float32, normalised, ``input_size``) and labels for the given indices."""
        x, y = self.x[idx], self.y[idx]
        if x.dtype == torch.uint8:
            mean, std = self._stats
            x = (x.float().div_(255.0) - mean) / std
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            shrink = x.shape[-1] > self.input_size
            x = F.interpolate(
                x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=shrink
            )
        return x, y

    @cached_property
    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """mean/std as device tensors, built once rather than inside every timed step."""
        mean = torch.tensor(self.mean, device=self.x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=self.x.device).view(1, -1, 1, 1)
        return mean, std

    def to(self, device: torch.device | str) -> Split:
        return Split(
            self.name,
            self.x.to(device),
            self.y.to(device),
            self.num_classes,
            self.input_size,
            self.mean,
            self.std,
            self.flip_ok,
        )

    def subset(self, idx: torch.Tensor, name: str | None = None) -> Split:
        """A split holding only the rows ``idx`` (e.g. a held-out batch carved from train)."""
        return Split(
            name or self.name,
            self.x[idx],
            self.y[idx],
            self.num_classes,
            self.input_size,
            self.mean,
            self.std,
            self.flip_ok,
        )
