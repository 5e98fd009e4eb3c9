"""``trnas_memory``: training memory of Original vs Tr-Net-i-j networks and supernets (Table 2, Fig. 6).

No dataset is needed: the networks train for ``steps`` steps through the shared engine
on a synthetic split of tensors of the real shape (``batch_size`` x 3 x ``input_size``^2,
random labels). Per network (``archs`` sampled architectures, or one supernet with
``kind="supernet"``) it records the saved-activation bytes of one training batch
(``mem_act_mib``, a counting hook: the same on any device; a frozen prefix saves
nothing) and, on CUDA, the allocator's peak during training after a reset
(``mem_peak_alloc_mib``, what the paper reports as torch.cuda.max_memory_allocated).
Both are means over the networks. The paper: 1.12 -> 0.53 GB for networks at batch 256
(2.11x), 2.2x for supernets at batch 128, fp32 (``train.bf16`` off by default).

The returned model is the last network as trained on the synthetic data; its val/test
accuracy is meaningless and only satisfies the harness contract.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import numpy as np
import torch

from bench import engine
from bench.contract.config import require
from bench.contract.interface import Fitted, Split, Task
from bench.contract.recorder import Recorder
from bench.engine.method import BaseMethod
from bench.measure import MemoryMeter
from bench.registry import register_method
from methods.trnas.common import MIB, Builder, TransferConfig
from methods.trnas.network import saved_activation_bytes
from methods.trnas.seeds import role_seed
from methods.trnas.space import format_arch, sample
from methods.trnas.supernet import ArchState, supernet


def _train_default() -> engine.TrainConfig:
    return engine.TrainConfig(lr=0.1, batch_size=256, steps=3, bf16=False, channels_last=False, log_every=1000)


@dataclass(frozen=True)
class MemoryConfig:
    """Paper shapes: CIFAR 32 px, batch 256 for networks (use 128 for supernets), fp32."""

    kind: Literal["net", "supernet"] = "net"
    archs: int = 8
    input_size: int = 32
    C: int = 0
    N: int = 5
    transfer: TransferConfig = field(default_factory=TransferConfig)
    train: engine.TrainConfig = field(default_factory=_train_default)

    def __post_init__(self) -> None:
        require(
            self.archs >= 1 and self.input_size >= 8 and self.N >= 1 and self.C >= 0,
            "archs >= 1, input_size >= 8, N >= 1, C >= 0",
        )


def synthetic_split(n: int, num_classes: int, size: int, device: torch.device, seed: int) -> Split:
    """``n`` random normal images of shape 3 x size x size with random labels, on ``device``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=gen)
    y = torch.randint(0, num_classes, (n,), generator=gen)
    return Split("synthetic", x.to(device), y.to(device), num_classes, size)


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
        cuda = task.device.type == "cuda"
        acts, peaks, net = [], [], None
        archs = sample(cfg.archs, task.seed) if cfg.kind == "net" else [None]
        quiet = Recorder(task.device, progress=lambda _m: None)
        for k, arch in enumerate(archs):
            net = None
            if cuda:
                torch.cuda.empty_cache()
            if arch is None:
                net = builder.wrap(supernet(ArchState(task.device, seed=task.seed), builder.C, cfg.N, task.num_classes))
            else:
                net = builder.net(arch, seed=role_seed("memory-init", task.seed, k))
            x, y = data.batch(slice(0, cfg.train.batch_size))
            acts.append(saved_activation_bytes(net, x, y) / MIB)
            meter = MemoryMeter(task.device) if cuda else contextlib.nullcontext()
            with meter:
                engine.fit(net, data, cfg.train, quiet if k else rec, stage="mem", seed=task.seed)
            if isinstance(meter, MemoryMeter):
                peaks.append(meter.result()["peak_alloc_mib"])
            rec.point("mem_act_mib", k, acts[-1])
        rec.scalar("mem_act_mib", float(np.mean(acts)))
        if peaks:
            rec.scalar("mem_peak_alloc_mib", float(np.mean(peaks)))
        rec.note("archs", [format_arch(a) for a in archs if a is not None])
        assert net is not None
        rec.scalar("trainable_params", sum(p.numel() for p in net.parameters() if p.requires_grad))
        return Fitted(net, f"{cfg.kind}:{cfg.transfer.label()}", info={"kind": cfg.kind})
