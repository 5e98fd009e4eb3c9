"""SimCLR pieces for the self-supervised variant: NT-Xent, the augmentation recipe, weighted kNN.

- ``nt_xent(z1, z2, temperature)``: SimCLR's normalised-temperature cross entropy over
  the 2N views of N images (each view's positive is the other view of its image, the
  other 2N - 2 views are negatives), averaged over the 2N anchors.
- ``SimCLRAugment``: the SimCLR CIFAR recipe as batched tensor ops on the device with
  per-sample random parameters (so it runs inside the engine's timed step, no data
  loader workers): RandomResizedCrop (area 0.08-1, aspect 3/4-4/3, torchvision's ten
  tries then the whole image), horizontal flip (p 0.5; only where the split allows it
  unless forced), ColorJitter(0.4, 0.4, 0.4, 0.1) with p 0.8 in a per-sample random
  order (torchvision's order shuffle), RandomGrayscale p 0.2. Inputs are the engine's
  normalised batches; they are mapped back to [0, 1] with the split's mean/std, augmented
  and re-normalised. One-channel inputs skip saturation, hue and grayscale (identities on
  gray images; an RGB image of a gray digit is unchanged by them too).
- ``knn_predict(features, bank, bank_labels, classes, k, temperature)``: weighted kNN on
  L2-normalised features with cosine similarity, each of the k neighbours voting
  ``exp(sim / temperature)`` for its class (the InstDisc / SimCLR-CIFAR protocol:
  k = 200, temperature 0.5). Returns the class scores (normalised to sum to 1).
- ``backbone_features`` / ``embed`` / ``knn_evaluate``: features of a ``MappedNet`` up to
  (not including) its classifier entry, and top-1 / NLL of the kNN classifier with a
  split (the training split) as memory bank.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from bench.contract.config import require
from bench.contract.split import Split
from bench.data.loader import iter_eval


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent loss of paired projections ``z1[i] <-> z2[i]`` (shape [N, D])."""
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


@torch.no_grad()
def knn_predict(
    features: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    classes: int,
    k: int = 200,
    temperature: float = 0.5,
) -> torch.Tensor:
    """Class scores [N, classes] of weighted kNN (cosine similarity, weights exp(sim / temperature))."""
    f, b = F.normalize(features.float(), dim=1), F.normalize(bank.float(), dim=1)
    sim = f @ b.T
    k = min(k, b.shape[0])
    top, idx = sim.topk(k, dim=1)
    weights = (top / temperature).exp()
    votes = torch.zeros(f.shape[0], classes, device=f.device)
    votes.scatter_add_(1, bank_labels[idx], weights)
    return votes / votes.sum(1, keepdim=True)


# ---------------------------------------------------------------------------------------------
# augmentation


@dataclass(frozen=True)
class AugConfig:
    """SimCLR's CIFAR augmentation (defaults = the paper's recipe, from SimCLR)."""

    crop_min_scale: float = 0.08
    crop_max_scale: float = 1.0
    crop_min_ratio: float = 3 / 4
    crop_max_ratio: float = 4 / 3
    flip: Literal["auto", "on", "off"] = "auto"
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    random_order: bool = True
    gray_p: float = 0.2

    def __post_init__(self) -> None:
        require(
            0 < self.crop_min_scale <= self.crop_max_scale <= 1, "need 0 < aug.crop_min_scale <= crop_max_scale <= 1"
        )
        require(0 < self.crop_min_ratio <= self.crop_max_ratio, "need 0 < aug.crop_min_ratio <= crop_max_ratio")
        require(self.flip in ("auto", "on", "off"), f"aug.flip must be auto, on or off, got {self.flip!r}")
        require(0 <= self.jitter_p <= 1 and 0 <= self.gray_p <= 1, "aug.jitter_p and aug.gray_p must be in [0, 1]")
        require(
            min(self.brightness, self.contrast, self.saturation) >= 0 and 0 <= self.hue <= 0.5,
            "aug.brightness/contrast/saturation must be >= 0 and aug.hue in [0, 0.5]",
        )


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601-2 luma [N, 1, H, W] with torchvision's coefficients (the image itself when it has one channel)."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)


def _blend(x: torch.Tensor, ref: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """factor * x + (1 - factor) * ref, clamped to [0, 1] (torchvision's ``_blend``); factor per sample."""
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * ref).clamp_(0.0, 1.0)


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    div = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    h = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    return torch.stack((h, s, maxc), 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0.0, 1.0)
    q = (v * (1.0 - s * f)).clamp(0.0, 1.0)
    t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0)
    sector = (i.unsqueeze(1) == torch.arange(6, device=x.device).view(1, 6, 1, 1)).to(x.dtype)  # [N, 6, H, W]
    table = torch.stack(
        (torch.stack((v, q, p, p, t, v), 1), torch.stack((t, v, v, q, p, p), 1), torch.stack((p, p, t, v, v, q), 1)), 1
    )  # [N, 3, 6, H, W]
    return (table * sector.unsqueeze(1)).sum(2)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of RGB images in [0, 1] by ``shift`` (per sample, in turns) through HSV."""
    hsv = _rgb_to_hsv(x)
    h = torch.remainder(hsv[:, 0] + shift.view(-1, 1, 1), 1.0)
    return _hsv_to_rgb(torch.stack((h, hsv[:, 1], hsv[:, 2]), 1))


class SimCLRAugment:
    """Two-view generator for the engine's normalised batches; see the module docstring.

    Randomness comes from its own generator on the batch's device (seeded), so the views
    are reproducible and independent of the global RNG the engine's loader uses.
    """

    def __init__(
        self, cfg: AugConfig, mean: Sequence[float], std: Sequence[float], *, flip_ok: bool = True, seed: int = 0
    ) -> None:
        self.cfg = cfg
        self.mean, self.std = tuple(mean), tuple(std)
        self.flip = cfg.flip == "on" or (cfg.flip == "auto" and flip_ok)
        self.seed = seed
        self._gen: torch.Generator | None = None
        self._dev: torch.device | None = None
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def for_split(cls, cfg: AugConfig, split: Split, seed: int = 0) -> SimCLRAugment:
        return cls(cfg, split.mean, split.std, flip_ok=split.flip_ok, seed=seed)

    def _setup(self, x: torch.Tensor) -> None:
        if self._gen is None or self._dev != x.device:
            self._gen, self._dev = torch.Generator(device=x.device), x.device
            self._gen.manual_seed(self.seed)
        c = x.shape[1]
        if self._stats is not None and self._stats[0].device == x.device and self._stats[0].shape[1] == c:
            return
        mean = torch.tensor(self.mean[:c] if len(self.mean) >= c else self.mean * c, device=x.device)
        std = torch.tensor(self.std[:c] if len(self.std) >= c else self.std * c, device=x.device)
        self._stats = (mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1))

    def _rand(self, *shape: int, device: torch.device) -> torch.Tensor:
        return torch.rand(*shape, generator=self._gen, device=device)

    def _uniform(self, n: int, lo: float, hi: float, device: torch.device) -> torch.Tensor:
        return lo + (hi - lo) * self._rand(n, device=device)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """One augmented view of the normalised batch ``x`` [N, C, H, W] (float32, same shape)."""
        ctx = (
            torch.autocast(x.device.type, enabled=False)
            if x.device.type in ("cuda", "cpu")
            else contextlib.nullcontext()
        )
        with ctx:
            self._setup(x)
            assert self._stats is not None  # _setup() just set it for this device and channel count
            mean, std = self._stats
            img = (x.float() * std + mean).clamp_(0.0, 1.0)
            img = self.crop_flip(img)
            img = self.jitter(img)
            img = self.grayscale(img)
            return ((img - mean) / std).contiguous()

    def crop_flip(self, img: torch.Tensor) -> torch.Tensor:
        """RandomResizedCrop back to the input size (bilinear) and a random horizontal flip, one grid_sample."""
        cfg, n, dev = self.cfg, img.shape[0], img.device
        tries = 10
        area = cfg.crop_min_scale + (cfg.crop_max_scale - cfg.crop_min_scale) * self._rand(n, tries, device=dev)
        lo, hi = math.log(cfg.crop_min_ratio), math.log(cfg.crop_max_ratio)
        ratio = torch.exp(lo + (hi - lo) * self._rand(n, tries, device=dev))
        w, h = torch.sqrt(area * ratio), torch.sqrt(area / ratio)  # fractions of the side
        ok = (w <= 1) & (h <= 1)
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.zeros(n, dtype=torch.long, device=dev))
        pick = lambda t: t.gather(1, first.view(-1, 1)).squeeze(1)
        w = torch.where(ok.any(1), pick(w), torch.ones(n, device=dev))  # fallback: the whole image
        h = torch.where(ok.any(1), pick(h), torch.ones(n, device=dev))
        cx = w / 2 + (1 - w) * self._rand(n, device=dev)
        cy = h / 2 + (1 - h) * self._rand(n, device=dev)
        sign = torch.ones(n, device=dev)
        if self.flip:
            sign = torch.where(self._rand(n, device=dev) < 0.5, -sign, sign)
        theta = torch.zeros(n, 2, 3, device=dev)
        theta[:, 0, 0], theta[:, 0, 2] = w * sign, 2 * cx - 1
        theta[:, 1, 1], theta[:, 1, 2] = h, 2 * cy - 1
        grid = F.affine_grid(theta, list(img.shape), align_corners=False)
        return F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def jitter(self, img: torch.Tensor) -> torch.Tensor:
        """ColorJitter with probability ``jitter_p`` per sample; factors and (optionally) order per sample."""
        cfg, n, dev = self.cfg, img.shape[0], img.device
        applied = self._rand(n, device=dev) < cfg.jitter_p
        one = torch.ones(n, device=dev)

        def factor(strength: float) -> torch.Tensor:
            f = self._uniform(n, max(0.0, 1 - strength), 1 + strength, dev)
            return torch.where(applied, f, one)

        b, c, s = factor(cfg.brightness), factor(cfg.contrast), factor(cfg.saturation)
        hue = torch.where(applied, self._uniform(n, -cfg.hue, cfg.hue, dev), torch.zeros(n, device=dev))
        rgb = img.shape[1] == 3
        ops = [
            lambda t: _blend(t, torch.zeros_like(t), b),
            lambda t: _blend(t, _gray(t).mean((1, 2, 3), keepdim=True), c),
        ]
        if rgb:  # saturation and hue are identities on one-channel images
            ops += [lambda t: _blend(t, _gray(t), s), lambda t: adjust_hue(t, hue)]
        if not cfg.random_order:
            for op in ops:
                img = op(img)
            return img
        order = torch.argsort(self._rand(n, len(ops), device=dev), dim=1)  # a random permutation per sample
        for slot in range(len(ops)):
            for k, op in enumerate(ops):
                chosen = (order[:, slot] == k).view(-1, 1, 1, 1)
                img = torch.where(chosen, op(img), img)
        return img

    def grayscale(self, img: torch.Tensor) -> torch.Tensor:
        """RandomGrayscale(p = gray_p), keeping the channel count."""
        if img.shape[1] == 1 or self.cfg.gray_p == 0:
            return img
        mask = (self._rand(img.shape[0], device=img.device) < self.cfg.gray_p).view(-1, 1, 1, 1)
        return torch.where(mask, _gray(img).expand_as(img), img)


# ---------------------------------------------------------------------------------------------
# features and kNN evaluation


def backbone_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Output of a ``MappedNet``'s entries before its classifier (for cell nets: GAP features)."""
    classifier = model.structure.classifier
    for name, part in model.parts():
        if name == classifier:
            break
        x = part(x)
    return x.flatten(1)


@torch.no_grad()
def embed(model: nn.Module, split: Split, batch_size: int = 512, bf16: bool = True) -> torch.Tensor:
    """Backbone features [N, D] (float32) of a whole split, in eval mode, no augmentation."""
    was_training = model.training
    model.eval()
    cuda = split.device.type == "cuda"
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and bf16 else contextlib.nullcontext()
    out = []
    try:
        with ctx:
            for x, _ in iter_eval(split, batch_size):
                out.append(backbone_features(model, x).float())
    finally:
        model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def knn_scores(
    query: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    classes: int,
    k: int,
    temperature: float,
    chunk: int = 1024,
) -> torch.Tensor:
    """``knn_predict`` in chunks of queries (a 10k x 50k similarity matrix would not fit on every GPU)."""
    return torch.cat(
        [
            knn_predict(query[i : i + chunk], bank, bank_labels, classes, k, temperature)
            for i in range(0, query.shape[0], chunk)
        ]
    )


@torch.no_grad()
def knn_evaluate(
    model: nn.Module,
    bank: Split,
    split: Split,
    *,
    k: int = 200,
    temperature: float = 0.5,
    bank_features: torch.Tensor | None = None,
    batch_size: int = 512,
) -> dict[str, float]:
    """kNN top-1 (%) and NLL (nats, -log of the true class's vote share, floored at 1e-6) on ``split``.

    The memory bank is ``bank`` (the training split) embedded without augmentation;
    pass ``bank_features`` to reuse an embedding.
    """
    feats_bank = embed(model, bank, batch_size) if bank_features is None else bank_features
    feats = embed(model, split, batch_size)
    scores = knn_scores(feats, feats_bank, bank.y, split.num_classes, k, temperature)
    y = split.y
    top1 = 100.0 * float((scores.argmax(1) == y).float().mean())
    nll = float(-scores.gather(1, y.view(-1, 1)).clamp_min(1e-6).log().mean())
    return {"top1_pct": top1, "loss_nat": nll}
