"""Provenance of a run: code version, software stack, hardware and determinism flags.

``collect()`` returns exactly the provenance columns of the store's ``runs`` table:

- ``tier``, ``mode``, ``device``: as given; ``argv``: the command line as JSON text;
- ``git_sha``, ``git_dirty`` (0/1): the checkout containing the working directory, else
  the one containing the ``bench`` package; None when neither is a git checkout.
  Untracked files do not make a checkout dirty (``git describe --dirty`` semantics);
- ``bench_version`` (of the installed ``archbench``), ``python``, ``torch``;
- ``cuda``, ``cudnn``, ``gpu_name``, ``gpu_count``, ``driver``: None without a usable GPU;
- ``host``, ``platform``, ``cpu_count``, ``cpu_threads`` (``threads``, or torch's intra-op
  thread count when not given or 0);
- ``flags_json``: ``determinism_flags()`` as JSON.

Nothing here initialises CUDA in a process that has no GPU, and nothing raises for a
missing git or GPU: provenance is recorded as unknown (None), never guessed.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
_GIT_TIMEOUT_S = 10


def utc_now() -> str:
    """Now in UTC as ISO-8601 with offset and fixed-width microseconds (sorts as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _git(cwd: Path, *args: str) -> str | None:
    """Stdout of ``git args`` run in ``cwd``, or None when git fails or is missing."""
    try:
        proc = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=_GIT_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_info(start: str | Path | None = None) -> dict[str, Any]:
    """``{"git_sha", "git_dirty"}`` of the checkout containing ``start``.

    Without ``start``: the working directory, falling back to the checkout that holds
    the ``bench`` package. Both None outside a checkout; ``git_sha`` None before the
    first commit.
    """
    candidates = [Path(start)] if start is not None else [Path.cwd(), PACKAGE_DIR]
    for path in candidates:
        if path.is_dir() and _git(path, "rev-parse", "--show-toplevel") is not None:
            status = _git(path, "status", "--porcelain", "--untracked-files=no")
            return {
                "git_sha": _git(path, "rev-parse", "--verify", "-q", "HEAD"),
                "git_dirty": None if status is None else int(bool(status)),
            }
    return {"git_sha": None, "git_dirty": None}


def _bench_version() -> str:
    try:
        return importlib.metadata.version("archbench")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def determinism_flags() -> dict[str, Any]:
    """The torch settings that decide whether a run is bit-reproducible, and TF32 use."""
    import torch

    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }


def _driver_version() -> str | None:
    """The NVIDIA kernel driver version (e.g. ``550.54.15``), or None when unknown."""
    try:
        text = Path("/proc/driver/nvidia/version").read_text()
        match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)", text)
        if match:
            return match.group(1)
    except OSError:
        pass
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=_GIT_TIMEOUT_S,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = proc.stdout.strip().splitlines()
    return lines[0].strip() if proc.returncode == 0 and lines else None


def _gpu_index(device: str) -> int:
    """The CUDA ordinal named by ``device`` (``cuda:1`` -> 1), else the current device."""
    import torch

    match = re.fullmatch(r"cuda:(\d+)", device.strip())
    return int(match.group(1)) if match else torch.cuda.current_device()


def gpu_info(device: str = "") -> dict[str, Any]:
    """CUDA/cuDNN versions and the GPU's name, count and driver; all None without a GPU.

    ``torch.cuda.is_available()`` is checked first (False at once on CPU builds), so
    CUDA is never initialised in a process that has no GPU.
    """
    import torch

    if not torch.cuda.is_available():
        return dict.fromkeys(("cuda", "cudnn", "gpu_name", "gpu_count", "driver"))
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "cuda": torch.version.cuda,
        "cudnn": None if cudnn is None else str(cudnn),
        "gpu_name": torch.cuda.get_device_name(_gpu_index(device)),
        "gpu_count": torch.cuda.device_count(),
        "driver": _driver_version(),
    }


def collect(*, argv: list[str] | None = None, tier: str = "", mode: str = "accuracy",
            device: str = "", threads: int | None = None) -> dict[str, Any]:
    """Every provenance column of a ``runs`` row (see the module docstring)."""
    import torch

    return {
        "tier": tier,
        "mode": mode,
        "device": device,
        "argv": json.dumps(list(sys.argv if argv is None else argv)),
        **git_info(),
        "bench_version": _bench_version(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        **gpu_info(device),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_threads": threads or torch.get_num_threads(),
        "flags_json": json.dumps(determinism_flags(), sort_keys=True),
    }
