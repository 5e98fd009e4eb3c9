"""The dominant Hessian eigenvalue of the validation loss w.r.t. alpha during DARTS search (Fig. 9).

Zela et al. 2020 ("Understanding and Robustifying DARTS") track the dominant eigenvalue of
the Hessian of the validation loss w.r.t. the architecture parameters, nabla^2_alpha L_valid:
when it keeps rising the search ends in a sharp region and the derived architecture degrades.
The paper's Fig. 9 shows it rising for the Original supernet with Cutout and levelling off for
Tr-Supernet-5-5.

``dominant_eigenvalue(loss_fn, params, iters, tol, seed)``: power iteration with
Hessian-vector products. ``loss_fn()`` is evaluated once; its gradient w.r.t. ``params`` is
taken with ``create_graph=True`` and each iteration is one more backward through that graph,
``H v = d(g . v)/d params`` (the graph is retained, so no forward is repeated). ``v`` starts
as a seeded standard normal vector; each step takes the Rayleigh quotient ``v . H v`` of the
unit vector and stops when it changes by at most ``tol`` relative, or after ``iters`` steps.
That is the eigenvalue of largest magnitude. Zela et al.'s "dominant eigenvalue" is the
largest one (the maximum of the spectrum; late in a search both coincide, but near alpha = 0 the
most negative eigenvalue can be the larger in magnitude), so by default a negative result is
followed by a second power iteration on ``H - lambda_min I``, whose largest eigenvalue is
``lambda_max - lambda_min`` (``which="magnitude"`` skips it). A loss whose gradient does not
depend on ``params`` has a zero Hessian: 0.0.

``HessianConfig`` / ``HessianProbe``: the opt-in probe of ``trnas_dartspt`` (its ``hessian``
field). Every ``every_epochs`` epochs of search steps (``engine.StepHooks.periodic``: outside
the timed step), the probe computes the dominant eigenvalue of the cross-entropy on ``batches``
fixed batches of the architecture split (the first ``batches * batch_size`` images,
unaugmented: the same images at every probe, so the series follows the landscape and not batch
noise), with the supernet in the mode the search has it in (train mode: batch statistics, as
the alpha step sees the loss). It does not perturb the search: no optimiser steps, gradients by
``torch.autograd.grad`` (no ``.grad`` is written), BatchNorm running statistics and every other
buffer restored after the forward, its own random generator. It records the series
``search_hessian_eig_nat`` (step = search step; the eigenvalue of a Hessian of a loss in nats
w.r.t. the dimensionless alpha is in nats) as it goes and, in ``finish``, the last value as the scalar
``search_hessian_eig_nat``, ``search_hessian_growth_ratio`` (last / first, where the first is
positive: Fig. 9's "keeps rising" is > 1), ``search_hessian_count`` and ``search_hessian_s``
(its wall seconds, which the method leaves out of ``search_s``); on CUDA also
``search_hessian_peak_alloc_mib``, the allocator's peak during the probes.

Memory: the probe holds one graph of ``batches * batch_size`` images with its create_graph
backward. That is not left out of ``search_peak_alloc_mib`` (meters nest: the search's peak is
the peak of everything in it), so the default is 32 images, half the search batch: at C = 16,
N = 5, 32 px the probe saves 1258 MiB where a search step's forward saves 1604 MiB (Original;
541 vs 696 MiB for Tr-Supernet-5-5, counted with ``bench.measure.SavedBytes`` on CPU), so it
should stay under the search's own peak; ``search_hessian_peak_alloc_mib`` shows whether it did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from bench.contract.config import require
from bench.contract.interface import Split
from bench.contract.recorder import Recorder
from bench.measure import MemoryMeter, Stopwatch


def _power(hvp: Callable[[torch.Tensor], torch.Tensor], v: torch.Tensor, iters: int, tol: float) -> float:
    """Power iteration on the symmetric operator ``hvp`` from ``v``: the Rayleigh quotient at the end."""
    v = v / v.norm()
    eig: float | None = None
    for _ in range(iters):
        hv = hvp(v)
        rayleigh = float(hv.double() @ v.double())
        norm = float(hv.double().norm())
        if norm == 0.0:
            return 0.0
        v = hv / norm
        if eig is not None and abs(rayleigh - eig) <= tol * max(abs(eig), 1e-12):
            return rayleigh
        eig = rayleigh
    assert eig is not None
    return eig


def dominant_eigenvalue(
    loss_fn: Callable[[], torch.Tensor],
    params: Sequence[torch.Tensor],
    iters: int = 20,
    tol: float = 1e-4,
    seed: int = 0,
    which: Literal["largest", "magnitude"] = "largest",
) -> float:
    """The dominant eigenvalue of the Hessian of ``loss_fn()`` w.r.t. ``params`` (power iteration, HVPs).

    ``which="largest"`` (Zela et al.'s number): the largest eigenvalue. Power iteration finds the
    eigenvalue of largest magnitude; when that one is negative it is the smallest, and a second
    power iteration on ``H - lambda_min I`` (eigenvalues >= 0, the largest one
    ``lambda_max - lambda_min``) gives ``lambda_max``. ``which="magnitude"``: the eigenvalue of
    largest magnitude, signed, from the first iteration alone. Each stage runs at most ``iters``
    HVPs and stops when its Rayleigh quotient changes by at most ``tol`` relative.
    """
    if iters < 1 or tol < 0 or which not in ("largest", "magnitude"):
        raise ValueError(
            f"iters must be >= 1, tol >= 0 and which 'largest' or 'magnitude', got {iters}, {tol}, {which}"
        )
    params = list(params)
    loss = loss_fn()
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    live = [(p, g) for p, g in zip(params, grads) if g is not None and g.requires_grad]
    if not live:
        return 0.0
    ps, gs = [p for p, _ in live], [g for _, g in live]
    sizes = [p.numel() for p in ps]

    def hvp(v: torch.Tensor) -> torch.Tensor:
        chunks = [c.view_as(p) for c, p in zip(torch.split(v, sizes), ps)]
        hv = torch.autograd.grad(gs, ps, grad_outputs=chunks, retain_graph=True, allow_unused=True)
        return torch.cat([(torch.zeros_like(p) if h is None else h.detach()).flatten() for p, h in zip(ps, hv)])

    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(sum(sizes), generator=gen, dtype=torch.float64).to(device=ps[0].device, dtype=ps[0].dtype)
    eig = _power(hvp, start, iters, tol)
    if which == "magnitude" or eig >= 0:
        return eig
    return eig + _power(lambda v: hvp(v) - eig * v, start, iters, tol)


@dataclass(frozen=True)
class HessianConfig:
    """The probe of ``trnas_dartspt``: off at ``every_epochs`` = 0 (see the module docstring)."""

    every_epochs: float = 0.0
    batches: int = 1
    batch_size: int = 32
    iters: int = 20
    tol: float = 1e-3

    def __post_init__(self) -> None:
        require(self.every_epochs >= 0, f"hessian.every_epochs must be >= 0 (0: off), got {self.every_epochs}")
        require(
            self.batches >= 1 and self.batch_size >= 1 and self.iters >= 1 and self.tol >= 0,
            "hessian.batches, hessian.batch_size and hessian.iters must be >= 1, hessian.tol >= 0",
        )

    def every_steps(self, train_size: int, search_batch: int) -> int:
        """``every_epochs`` in search steps (at least 1); 0 when the probe is off."""
        if not self.every_epochs:
            return 0
        per_epoch = max(1, train_size // search_batch)
        return max(1, round(self.every_epochs * per_epoch))


class HessianProbe:
    """A ``periodic`` search callback: the dominant eigenvalue of the validation loss w.r.t. ``alpha``."""

    def __init__(
        self, net: torch.nn.Module, alpha: torch.Tensor, split: Split, cfg: HessianConfig, seed: int, rec: Recorder
    ) -> None:
        self.net, self.alpha, self.cfg, self.seed, self.rec = net, alpha, cfg, seed, rec
        n = min(len(split), cfg.batches * cfg.batch_size)
        self.data = [split.batch(slice(s, min(s + cfg.batch_size, n))) for s in range(0, n, cfg.batch_size)]
        self.values: list[tuple[int, float]] = []
        self.watch = Stopwatch(split.device)
        self.peak_alloc_mib: float | None = None

    def loss(self) -> torch.Tensor:
        """Mean cross-entropy (nats) over the probe's fixed batches."""
        total = sum(F.cross_entropy(self.net(x), y) for x, y in self.data)
        return total / len(self.data)

    def __call__(self, step: int) -> None:
        device = self.alpha.device
        meter = MemoryMeter(device) if device.type == "cuda" else contextlib.nullcontext()
        with self.watch, meter:
            buffers = [b.detach().clone() for b in self.net.buffers()]
            try:
                with torch.enable_grad():
                    eig = dominant_eigenvalue(self.loss, [self.alpha], self.cfg.iters, self.cfg.tol, self.seed)
            finally:
                with torch.no_grad():
                    for b, saved in zip(self.net.buffers(), buffers):
                        b.copy_(saved)
        if isinstance(meter, MemoryMeter):
            peak = meter.result()["peak_alloc_mib"]
            self.peak_alloc_mib = max(peak, self.peak_alloc_mib or 0.0)
        self.values.append((step, eig))
        self.rec.point("search_hessian_eig_nat", step, eig)

    def finish(self) -> None:
        """Record the summaries (the count and seconds only when the probe never ran)."""
        rec = self.rec
        rec.scalar("search_hessian_count", len(self.values))
        rec.scalar("search_hessian_s", self.watch.total_s)
        if self.peak_alloc_mib is not None:
            rec.scalar("search_hessian_peak_alloc_mib", self.peak_alloc_mib)
        if not self.values:
            return
        first, last = self.values[0][1], self.values[-1][1]
        rec.scalar("search_hessian_eig_nat", last)
        if first > 0:
            rec.scalar("search_hessian_growth_ratio", last / first)
