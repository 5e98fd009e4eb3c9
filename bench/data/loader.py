"""On-device batching: no DataLoader, no workers, nothing waits on the host.

``DeviceLoader(split, batch_size, shuffle=..., flip=..., crop_pad=..., cutout=..., cutout_prob=..., seed=...)``
yields one epoch of ``(x, y)`` per ``iter()``, all on the split's device: a seeded
permutation, random horizontal flips (only where ``split.flip_ok``), random
translations by up to ``crop_pad`` pixels (zero padding in normalised units) and
Cutout (a zeroed square per image, the NAS training recipe), all vectorised over the batch.
``iter_eval(split)`` yields the split in order, unaugmented.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from bench.contract.split import Split


class DeviceLoader:
    """One epoch of augmented ``(x, y)`` batches per ``iter()``, entirely on the split's device.

    The permutation and augmentation draws come from one ``torch.Generator`` on the device
    seeded with ``seed``: epochs differ, and the sequence of epochs is the same for a seed.
    ``flip`` mirrors a random half of each batch where ``split.flip_ok`` allows it (digit
    sets never flip). ``crop_pad`` translates each image by up to that many pixels (zero
    padding, i.e. the mean in normalised units). ``cutout`` zeroes a ``cutout`` x ``cutout``
    square centred on a uniformly drawn pixel of each image, clipped at the border (DeVries
    and Taylor 2017, as DARTS trains), to each image independently with probability
    ``cutout_prob`` (an attribute a caller may change between epochs, as darts-pt ramps it; at
    1, the default, every image and no extra random draws; at 0 none). ``drop_last`` drops a final partial batch,
    but a split smaller than ``batch_size`` still yields one batch of all of it.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool = True,
        flip: bool = False,
        crop_pad: int = 0,
        cutout: int = 0,
        cutout_prob: float = 1.0,
        drop_last: bool = True,
        seed: int = 0,
    ) -> None:
        if batch_size < 1 or crop_pad < 0 or cutout < 0 or not 0.0 <= cutout_prob <= 1.0:
            raise ValueError(
                f"batch_size must be >= 1, crop_pad and cutout >= 0, cutout_prob in [0, 1], got {batch_size}, "
                f"{crop_pad}, {cutout}, {cutout_prob}"
            )
        self.split, self.batch_size = split, int(batch_size)
        self.shuffle, self.flip, self.crop_pad, self.drop_last = shuffle, flip and split.flip_ok, crop_pad, drop_last
        self.cutout, self.cutout_prob = cutout, float(cutout_prob)
        self.generator = torch.Generator(device=split.device)
        self.generator.manual_seed(seed)
        self._ar = torch.arange(split.input_size, device=split.device)  # reused by every crop

    def __len__(self) -> int:
        n, b = len(self.split), self.batch_size
        if n == 0:
            return 0
        return max(n // b, 1) if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n, b, dev = len(self.split), self.batch_size, self.split.device
        order = torch.randperm(n, generator=self.generator, device=dev) if self.shuffle else torch.arange(n, device=dev)
        for i in range(len(self)):
            x, y = self.split.batch(order[i * b : (i + 1) * b])
            if self.flip:
                x = self._random_flip(x)
            if self.crop_pad:
                x = self._random_translate(x)
            if self.cutout and self.cutout_prob > 0:
                x = self._cutout(x)
            yield x, y

    def _random_flip(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.rand(x.shape[0], generator=self.generator, device=x.device) < 0.5
        return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)

    def _random_translate(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad by ``crop_pad`` and crop back at a random offset per sample (one gather)."""
        p, (nb, c, h, w) = self.crop_pad, x.shape
        padded = F.pad(x, (p, p, p, p))
        off = torch.randint(0, 2 * p + 1, (2, nb), generator=self.generator, device=x.device)
        rows = (off[0].view(-1, 1) + self._ar[:h]).view(nb, 1, h, 1)
        cols = (off[1].view(-1, 1) + self._ar[:w]).view(nb, 1, 1, w)
        batch = torch.arange(nb, device=x.device).view(nb, 1, 1, 1)
        chans = torch.arange(c, device=x.device).view(1, c, 1, 1)
        return padded[batch, chans, rows, cols]

    def _cutout(self, x: torch.Tensor) -> torch.Tensor:
        """Zero a ``cutout``-sided square around a random centre per image (clipped at the border),
        each image with probability ``cutout_prob``."""
        nb, _, h, w = x.shape
        centre = torch.stack(
            [
                torch.randint(0, h, (nb,), generator=self.generator, device=x.device),
                torch.randint(0, w, (nb,), generator=self.generator, device=x.device),
            ]
        )
        lo = centre - self.cutout // 2
        rows = (self._ar[:h].view(1, h) >= lo[0].view(-1, 1)) & (
            self._ar[:h].view(1, h) < (lo[0] + self.cutout).view(-1, 1)
        )
        cols = (self._ar[:w].view(1, w) >= lo[1].view(-1, 1)) & (
            self._ar[:w].view(1, w) < (lo[1] + self.cutout).view(-1, 1)
        )
        hole = rows.view(nb, 1, h, 1) & cols.view(nb, 1, 1, w)
        if self.cutout_prob < 1.0:  # each image independently (darts-pt's Cutout(prob): a Bernoulli per image)
            hit = torch.rand(nb, generator=self.generator, device=x.device) < self.cutout_prob
            hole = hole & hit.view(nb, 1, 1, 1)
        return x.masked_fill(hole, 0.0)


def iter_eval(split: Split, batch_size: int = 256) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` batches of ``split`` in order, unaugmented, the last partial batch included."""
    for start in range(0, len(split), batch_size):
        yield split.batch(slice(start, start + batch_size))
