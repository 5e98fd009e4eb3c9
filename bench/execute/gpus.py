"""Which GPUs this process may use, and which one a pytest-xdist worker gets.

One parser of ``CUDA_VISIBLE_DEVICES`` for the pytest plugin (which pins each xdist worker to
one GPU) and the cluster executor (which hands GPU slots to local tasks). Torch is imported only
when the variable is unset, to count devices.
"""

from __future__ import annotations

import os

from bench.errors import InvalidConfig

__all__ = ["gpu_for_worker", "visible_gpu_ids", "visible_gpus"]


def visible_gpus() -> list[str]:
    """GPU ids visible to this process: ``CUDA_VISIBLE_DEVICES`` (``-1`` and blanks dropped; ids may
    be UUIDs) or, when it is unset, ``0 .. device_count - 1``; none without CUDA."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    except Exception:  # noqa: BLE001 - a broken CUDA install means no GPUs, not a crash
        return []


def visible_gpu_ids() -> list[int]:
    """``visible_gpus`` as integer indices, as submitit's LocalExecutor needs them."""
    ids = visible_gpus()
    if not all(g.isdigit() for g in ids):
        raise InvalidConfig(
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r} holds non-integer "
            "ids; submitit's LocalExecutor needs integer GPU indices"
        )
    return [int(g) for g in ids]


def gpu_for_worker(worker_id: str, visible: list[str]) -> str | None:
    """The GPU id a worker ``gwN`` is pinned to: round-robin over ``visible`` (None if none)."""
    if not visible or not worker_id.startswith("gw"):
        return None
    return visible[int(worker_id[2:]) % len(visible)]
