"""``trnas_memory``: training memory of Original vs Tr-Net-i-j networks and supernets (Table 2, Fig. 6).

No dataset is needed: the networks train for ``train.steps`` steps through the shared engine on
a synthetic split of tensors of the real shape (``batch_size`` x 3 x ``input_size``^2, random
labels), in fp32 and NCHW as the paper trained (``train.bf16`` and ``train.channels_last`` must be
off: bf16 halves what a step holds). Per network (``archs`` sampled architectures, or one
supernet with ``kind="supernet"``) it records, as series over the networks and as their means:

- ``mem_act_mib``: the bytes autograd saves for backward in one training batch (a counting
  hook: the same on any device; a frozen prefix saves nothing);
- on CUDA, ``mem_avg_alloc_mib``: the allocator's allocated bytes as each training step's
  forward ends (the step then holds its saved activations, the model, the gradients and the
  optimiser state), averaged over the steps after the first (``bench.measure.AllocatedSampler``):
  the paper's "average allocated memory" (Table 2: 1.12 -> 0.53 GB at batch 256, 2.11x);
- on CUDA, ``mem_step_end_alloc_mib``: the same reading after each optimiser step (the
  activations freed: what the training keeps between steps), and ``mem_peak_alloc_mib``, the
  allocator's peak over the training (``MemoryMeter``, torch.cuda.max_memory_allocated).

Readings are absolute (the synthetic split and B's weights on the device count, on both sides).
With transfer on and ``pair_original`` (default), the cell also measures each architecture
without transfer (same architecture, same initialisation): the series ``mem_base_<figure>`` and
the ratio Original / this cell's network of the means, ``mem_<figure>_ratio``, with its
percentile bootstrap CI over the architectures (``mem_<figure>_lo_ratio``, ``_hi_ratio``; from 2
architectures on). A supernet is one network: its ratio has no CI. The paper: 2.11x for
networks at batch 256 (Table 2), 2.2x for supernets at batch 128 (Fig. 6).

The returned model is the last network as trained on the synthetic data; its val/test
accuracy is meaningless and only satisfies the harness contract.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

from bench import engine
from bench.contract.config import require
from bench.contract.interface import Fitted, Split, Task
from bench.contract.recorder import Recorder
from bench.engine.method import BaseMethod
from bench.measure import AllocatedSampler, MemoryMeter
from bench.registry import register_method
from methods.trnas.common import MIB, Builder, TransferConfig
from methods.trnas.network import saved_activation_bytes
from methods.trnas.seeds import role_seed
from methods.trnas.space import Arch, format_arch, sample
from methods.trnas.supernet import ArchState, supernet

FIGURES = ("act", "avg_alloc", "step_end_alloc", "peak_alloc")


def _train_default() -> engine.TrainConfig:
    return engine.TrainConfig(lr=0.1, batch_size=256, steps=3, bf16=False, channels_last=False, log_every=1000)


@dataclass(frozen=True)
class MemoryConfig:
    """Paper shapes: CIFAR 32 px, batch 256 for networks (128 for supernets), fp32 NCHW, 64 architectures."""

    kind: Literal["net", "supernet"] = "net"
    archs: int = 64
    input_size: int = 32
    C: int = 0
    N: int = 5
    transfer: TransferConfig = field(default_factory=TransferConfig)
    train: engine.TrainConfig = field(default_factory=_train_default)
    pair_original: bool = True
    bootstrap: int = 1000
    ci_level: float = 0.95

    def __post_init__(self) -> None:
        require(
            self.archs >= 1 and self.input_size >= 8 and self.N >= 1 and self.C >= 0,
            "archs >= 1, input_size >= 8, N >= 1, C >= 0",
        )
        require(
            not self.train.bf16 and not self.train.channels_last,
            "trnas_memory measures the paper's fp32 NCHW memory: train.bf16 and train.channels_last must be false",
        )
        require(self.bootstrap >= 0 and 0 < self.ci_level < 1, "bootstrap must be >= 0 and ci_level in (0, 1)")


def synthetic_split(n: int, num_classes: int, size: int, device: torch.device, seed: int) -> Split:
    """``n`` random normal images of shape 3 x size x size with random labels, on ``device``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=gen)
    y = torch.randint(0, num_classes, (n,), generator=gen)
    return Split("synthetic", x.to(device), y.to(device), num_classes, size)


def sampling_hooks(
    at_forward: AllocatedSampler, at_step_end: AllocatedSampler, label_smoothing: float
) -> engine.StepHooks:
    """Step hooks that read ``at_forward`` as each step's loss is computed (before backward: the
    step's saved activations are held) and ``at_step_end`` after its optimiser step."""
    loss_of = engine.default_loss(label_smoothing)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = loss_of(model, x, y)
        at_forward.sample()
        return out

    return engine.StepHooks(loss_fn=loss, after_step=lambda _step, _x, _y: at_step_end.sample())


def train_memory(net: nn.Module, data: Split, cfg: engine.TrainConfig, rec: Recorder, seed: int) -> dict[str, float]:
    """The memory figures of training ``net`` on ``data`` (keys of ``FIGURES``, in MiB; the CUDA
    ones only on CUDA): saved activations of one batch, then the training under a meter and samplers."""
    device = data.device
    x, y = data.batch(slice(0, cfg.batch_size))
    out = {"act": saved_activation_bytes(net, x, y) / MIB}
    del x, y
    at_forward, at_step_end = AllocatedSampler(device), AllocatedSampler(device)
    meter = MemoryMeter(device) if device.type == "cuda" else contextlib.nullcontext()
    with meter:
        engine.fit(
            net,
            data,
            cfg,
            rec,
            stage="mem",
            seed=seed,
            hooks=sampling_hooks(at_forward, at_step_end, cfg.label_smoothing),
        )
    if isinstance(meter, MemoryMeter):
        out["peak_alloc"] = meter.result()["peak_alloc_mib"]
    for name, sampler in (("avg_alloc", at_forward), ("step_end_alloc", at_step_end)):
        got = sampler.result()
        if got:
            out[name] = got["avg_alloc_mib"]
    return out


def ratio_ci(base: list[float], ours: list[float], *, resamples: int, level: float, seed: int) -> tuple[float, float]:
    """Percentile bootstrap CI of ``sum(base) / sum(ours)`` (a ratio of means), resampling
    architectures (pairs) with a seeded generator."""
    a, b = np.asarray(base, dtype=float), np.asarray(ours, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), (resamples, len(a)))
    ratios = a[idx].sum(axis=1) / b[idx].sum(axis=1)
    lo, hi = np.percentile(ratios, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


@register_method("trnas_memory")
class TrNasMemory(BaseMethod[MemoryConfig]):
    """Training memory of NB201 networks or supernets with and without transfer."""

    Config: ClassVar[type] = MemoryConfig
    name: ClassVar[str]

    def fit(self, task: Task, rec: Recorder) -> Fitted:
        cfg = self.config
        builder = Builder(task, cfg.C, cfg.N, cfg.transfer, random_b=True)  # memory does not depend on B's weights
        data = synthetic_split(
            cfg.train.batch_size * cfg.train.total_steps(cfg.train.batch_size),
            task.num_classes,
            cfg.input_size,
            task.device,
            task.seed,
        )
        paired = cfg.pair_original and cfg.transfer.enabled
        archs = sample(cfg.archs, task.seed) if cfg.kind == "net" else [None]
        quiet = Recorder(task.device, progress=lambda _m: None)
        ours: dict[str, list[float]] = {f: [] for f in FIGURES}
        base: dict[str, list[float]] = {f: [] for f in FIGURES}
        net: nn.Module | None = None
        for k, arch in enumerate(archs):
            sides = [(base, False, quiet)] if paired else []  # Original first: the cell's network is kept
            sides.append((ours, cfg.transfer.enabled, quiet if k else rec))
            for store, transferred, who in sides:
                net = None  # the previous network is freed before the next is measured
                if task.device.type == "cuda":
                    torch.cuda.empty_cache()
                net = self._build(builder, task, arch, k, transferred)
                for name, value in train_memory(net, data, cfg.train, who, task.seed).items():
                    store[name].append(value)
            for f in FIGURES:
                if len(ours[f]) == k + 1:
                    rec.point(f"mem_{f}_mib", k, ours[f][-1])
                if paired and len(base[f]) == k + 1:
                    rec.point(f"mem_base_{f}_mib", k, base[f][-1])
        self._summarise(rec, ours, base if paired else None, task.seed)
        rec.note("archs", [format_arch(a) for a in archs if a is not None])
        assert net is not None
        rec.scalar("trainable_params", sum(p.numel() for p in net.parameters() if p.requires_grad))
        return Fitted(net, f"{cfg.kind}:{cfg.transfer.label()}", info={"kind": cfg.kind})

    def _build(self, builder: Builder, task: Task, arch: Arch | None, k: int, transferred: bool) -> nn.Module:
        """Architecture ``arch`` (None: the supernet) with or without transfer, initialised by role ``memory-init``."""
        cfg = self.config
        if arch is None:
            plain = supernet(ArchState(task.device, seed=task.seed), builder.C, cfg.N, task.num_classes)
            return builder.wrap(plain, transferred)
        return builder.net(arch, seed=role_seed("memory-init", task.seed, k), transferred=transferred)

    def _summarise(
        self, rec: Recorder, ours: dict[str, list[float]], base: dict[str, list[float]] | None, seed: int
    ) -> None:
        """Means over the networks and, when paired, the Original / ours ratios with bootstrap CIs."""
        cfg = self.config
        for f in FIGURES:
            if not ours[f]:
                continue
            rec.scalar(f"mem_{f}_mib", float(np.mean(ours[f])))
            if base is None or len(base[f]) != len(ours[f]):
                continue
            rec.scalar(f"mem_{f}_ratio", float(np.sum(base[f]) / np.sum(ours[f])))
            if len(ours[f]) >= 2 and cfg.bootstrap:
                lo, hi = ratio_ci(base[f], ours[f], resamples=cfg.bootstrap, level=cfg.ci_level, seed=seed)
                rec.scalar(f"mem_{f}_lo_ratio", lo)
                rec.scalar(f"mem_{f}_hi_ratio", hi)
