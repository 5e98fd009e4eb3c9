"""The engine's speed options: which optimiser implementation runs, and what ``torch.compile``
has compiled.

``optimizer_impl`` resolves ``TrainConfig.optimizer_impl`` for a set of parameters (``"auto"``:
fused on CUDA where torch has it for every parameter, else foreach; torch's default, the loop,
on CPU) and ``impl_kwargs`` is the keyword ``make_optimizer`` passes torch for it: none for
``"auto"`` on CPU, so a CPU training is exactly what it was before the option existed.
``compiled_frames`` reads dynamo's process-wide count of compiled frames, from which the engine
counts recompilations after a fit's compile step (``bench.engine.train.TrainStep``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn

from bench.contract.settings import TrainConfig


def optimizer_impl(params: Sequence[nn.Parameter], cfg: TrainConfig) -> str:
    """The optimiser implementation ``make_optimizer`` runs for ``params``: ``"fused"``,
    ``"foreach"`` or ``"loop"``.

    ``cfg.optimizer_impl`` unless it is ``"auto"``: then, when every parameter is on CUDA, fused
    if they are all floating point and this torch's optimiser takes ``fused`` (one kernel for
    the whole update), else foreach; otherwise torch's own default, the loop on CPU.
    """
    if cfg.optimizer_impl != "auto":
        return cfg.optimizer_impl
    if params and all(p.is_cuda for p in params):
        floating = all(p.is_floating_point() for p in params)
        return "fused" if floating and _takes_fused(cfg.optimizer) else "foreach"
    return "loop"


def _takes_fused(optimizer: str) -> bool:
    """Whether this torch's SGD/AdamW accepts ``fused`` (guarded: the option is a torch version's)."""
    cls = torch.optim.SGD if optimizer == "sgd" else torch.optim.AdamW
    return "fused" in inspect.signature(cls.__init__).parameters


def impl_kwargs(impl: str, cfg: TrainConfig) -> dict[str, bool]:
    """The optimiser keyword for ``impl``; none for ``"auto"`` off CUDA (torch's default)."""
    if impl == "fused":
        return {"fused": True}
    if cfg.optimizer_impl == "auto" and impl == "loop":
        return {}
    return {"foreach": impl == "foreach"}


def compiled_frames() -> int | None:
    """Frames ``torch.compile`` has compiled in this process so far (dynamo's ``frames``/``ok``
    counter, process-wide), or None where this torch has no such counter."""
    try:
        from torch._dynamo import utils as dynamo_utils
    except ImportError:
        return None
    counters = getattr(dynamo_utils, "counters", None)
    if counters is None:
        return None
    return int(counters["frames"]["ok"])
