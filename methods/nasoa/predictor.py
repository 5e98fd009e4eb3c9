"""The online accuracy predictor: an adaptive-depth MLP trained by Hedge backpropagation.

NASOA Eq. 3-4 (with the typos resolved as methods.md section 2 explains):

- h_l = ReLU(Phi_l h_{l-1}), l = 1..L (L = 10, width 64); each layer has a scalar head
  f_l = W_l h_l; the prediction is sum_l alpha_l f_l with alpha a distribution (1/L at
  the start);
- per sample, L_l = (f_l - y)^2 on the [0, 1] accuracy scale. W_l moves by
  -eta alpha_l dL_l/dW_l and Phi_l by -eta sum_{j >= l} alpha_j dL_j/dPhi_l: exactly the
  gradient of sum_l alpha_l L_l with alpha held constant, which is how ``update`` computes
  it (one backward pass; ``tests/test_nasoa_predictor.py`` checks it against the per-layer
  formula numerically);
- then alpha_l <- alpha_l beta^{L_l} (L_l on clipped predictions, so it lies in [0, 1]),
  optionally floored at s/L (ODL's smoothing), and renormalised.

A fixed-depth MLP (the paper's baselines, L = 3, 6, 10, 14) is the same network with
alpha pinned to the last layer and no Hedge step. ``prequential`` runs the
predict-then-update protocol over a stream and reports cumulative MAE/MSE (x100 on the
[0, 1] scale) over the whole stream and its 20-40 % and 80-100 % segments (Table 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class PredictorConfig:
    """Hyper-parameters of the online predictor (defaults: the paper's)."""

    depth: int = 10
    width: int = 64
    adaptive: bool = True
    lr: float = 0.01
    beta: float = 0.99
    floor: float = 0.0  # ODL smoothing s: alpha_l >= s / L (ours: off by default; paper optional 0.2)
    seed: int = 0


class HedgeMLP(nn.Module):
    """Deep MLP with one scalar head per hidden layer (see the module docstring)."""

    def __init__(self, in_dim: int, cfg: PredictorConfig = PredictorConfig()) -> None:
        super().__init__()
        if cfg.depth < 1:
            raise ValueError(f"depth must be >= 1, got {cfg.depth}")
        self.cfg = cfg
        gen = torch.Generator().manual_seed(cfg.seed)
        self.hidden = nn.ModuleList(nn.Linear(in_dim if l == 0 else cfg.width, cfg.width) for l in range(cfg.depth))
        self.heads = nn.ModuleList(nn.Linear(cfg.width, 1) for _ in range(cfg.depth))
        with torch.no_grad():
            for lin in list(self.hidden) + list(self.heads):
                bound = 1.0 / lin.in_features**0.5
                lin.weight.uniform_(-bound, bound, generator=gen)
                lin.bias.uniform_(-bound, bound, generator=gen)
        if cfg.adaptive:
            alpha = torch.full((cfg.depth,), 1.0 / cfg.depth)
        else:
            alpha = torch.zeros(cfg.depth)
            alpha[-1] = 1.0
        self.register_buffer("alpha", alpha.double())
        self.opt = torch.optim.SGD(self.parameters(), lr=cfg.lr)

    def layer_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every head's output f_l, shape (batch, L)."""
        h, outs = x, []
        for lin, head in zip(self.hidden, self.heads):
            h = torch.relu(lin(h))
            outs.append(head(h).squeeze(-1))
        return torch.stack(outs, dim=-1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """sum_l alpha_l f_l, clipped to [0, 1]."""
        return (self.layer_outputs(x) * self.alpha.to(x.dtype)).sum(-1).clamp(0.0, 1.0)

    def hedge_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum_l alpha_l L_l with alpha detached, per-layer L_l on clipped predictions)."""
        f = self.layer_outputs(x)
        per_layer = (f - y.unsqueeze(-1)).pow(2).mean(0)
        weighted = (self.alpha.detach().to(f.dtype) * per_layer).sum()
        clipped = (f.detach().clamp(0.0, 1.0) - y.unsqueeze(-1)).pow(2).mean(0)
        return weighted, clipped

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One online step on (x, y): SGD on the Hedge loss, then the alpha update."""
        weighted, clipped = self.hedge_loss(x, y)
        self.opt.zero_grad(set_to_none=True)
        weighted.backward()
        self.opt.step()
        if self.cfg.adaptive:
            self.hedge_step(clipped)

    @torch.no_grad()
    def hedge_step(self, losses: torch.Tensor) -> None:
        """alpha_l <- alpha_l beta^{L_l}, floored at s/L, renormalised."""
        alpha = self.alpha * torch.pow(torch.tensor(self.cfg.beta, dtype=torch.float64), losses.double())
        alpha = alpha / alpha.sum()
        if self.cfg.floor > 0:
            alpha = alpha.clamp_min(self.cfg.floor / self.cfg.depth)
            alpha = alpha / alpha.sum()
        self.alpha.copy_(alpha)


@dataclass(frozen=True)
class PrequentialResult:
    """Errors of a predict-then-update pass; MAE/MSE are x100 on the [0, 1] scale."""

    predictions: np.ndarray
    targets: np.ndarray
    mae: dict[str, float]
    mse: dict[str, float]


SEGMENTS = {"all": (0.0, 1.0), "20_40": (0.2, 0.4), "80_100": (0.8, 1.0)}


def segment_errors(pred: np.ndarray, target: np.ndarray) -> tuple[dict[str, float], dict[str, float]]:
    """MAE and MSE (x100) over the whole stream and the 20-40 % / 80-100 % segments."""
    n = len(pred)
    err = pred - target
    mae, mse = {}, {}
    for name, (lo, hi) in SEGMENTS.items():
        a, b = int(round(lo * n)), max(int(round(hi * n)), int(round(lo * n)) + 1)
        seg = err[a : min(b, n)]
        mae[name] = float(np.abs(seg).mean() * 100) if len(seg) else float("nan")
        mse[name] = float((seg**2).mean() * 100) if len(seg) else float("nan")
    return mae, mse


def prequential(model: HedgeMLP, x: torch.Tensor, y: torch.Tensor, update: bool = True) -> PrequentialResult:
    """Predict sample t, then (if ``update``) learn from it; errors over the stream."""
    preds = np.zeros(len(y))
    for t in range(len(y)):
        preds[t] = float(model.predict(x[t : t + 1])[0])
        if update:
            model.update(x[t : t + 1], y[t : t + 1])
    targets = y.double().numpy()
    mae, mse = segment_errors(preds, targets)
    return PrequentialResult(preds, targets, mae, mse)


def table3(
    x: torch.Tensor,
    y: torch.Tensor,
    depths: Sequence[int] = (3, 6, 10, 14),
    adaptive_depth: int = 10,
    base: PredictorConfig = PredictorConfig(),
) -> dict[str, PrequentialResult]:
    """Prequential results of fixed MLPs of each depth and the adaptive MLP on one stream."""
    import dataclasses

    out = {}
    for d in depths:
        out[f"fixed{d}"] = prequential(HedgeMLP(x.shape[1], dataclasses.replace(base, depth=d, adaptive=False)), x, y)
    out["adaptive"] = prequential(
        HedgeMLP(x.shape[1], dataclasses.replace(base, depth=adaptive_depth, adaptive=True)), x, y
    )
    return out
