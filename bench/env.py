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
- ``flags_json``: ``determinism_flags()`` as JSON;
- ``arith_json``: ``arithmetic()`` as JSON: what decides the floating-point result of a
  computation besides its inputs (torch version, device, threads, the CPU ISA that ATen,
  oneDNN and MKL use). Caches key on it (``bench.cache``) and ``bench gate`` reads it to
  tell a same-arithmetic rerun from a cross-arithmetic one.
- ``pid``: this process, the run's writer (``Store.reap_dead_runs`` finds runs whose writer died).

Nothing here initialises CUDA in a process that has no GPU, and nothing raises for a
missing git or GPU: provenance is recorded as unknown (None), never guessed.
"""

from __future__ import annotations

import functools
import hashlib
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
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
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


@functools.lru_cache(maxsize=1)
def machine_cpu() -> dict[str, str | None]:
    """This machine's CPU: model, widest vector ISA (``avx512``, ``avx2``, ``sse4_2``) and ``cpu_id``.

    ``cpu_id`` hashes the model name, every vector-ISA flag and the cache size from
    /proc/cpuinfo: what the CPU math libraries look at when they pick kernels and blocking,
    so two machines with one ``cpu_id`` run the same code paths. Even with the ISA pinned
    (Makefile ``SMOKE_ENV``), CPU results differ between CPU models: oneDNN sizes its blocks
    to the caches, and MKL dispatches per vendor. None where unknown.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"cpu_model": None, "cpu_isa": None, "cpu_id": None}
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    flags_line = re.search(r"^flags\s*:\s*(.+)$", text, re.MULTILINE)
    cache = re.search(r"^cache size\s*:\s*(.+)$", text, re.MULTILINE)
    flags = set(flags_line.group(1).split()) if flags_line else set()
    isa = next(
        (name for name, flag in (("avx512", "avx512f"), ("avx2", "avx2"), ("sse4_2", "sse4_2")) if flag in flags), None
    )
    vector = sorted(f for f in flags if f.startswith(("sse", "ssse", "avx", "amx", "fma", "f16c")))
    name = model.group(1).strip() if model else None
    ident = hashlib.sha256(" ".join([str(name), *vector, cache.group(1).strip() if cache else ""]).encode())
    return {"cpu_model": name, "cpu_isa": isa, "cpu_id": ident.hexdigest()[:12]}


# Environment variables that pin the CPU math libraries' code paths (Makefile SMOKE_ENV).
ISA_PINS = {"onednn_isa": ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"), "mkl_cbwr": ("MKL_CBWR",)}


def arithmetic(device: Any = "cpu", threads: int | None = None) -> dict[str, Any]:
    """What decides the floating-point result of a computation on ``device`` besides its inputs.

    Two computations with equal inputs and an equal ``arithmetic()`` give the same bits on
    machines of the same kind; anything here that differs can change results (summation
    order, vector width, kernel choice). On CPU: the CPU (``machine_cpu``), torch's version,
    intra-op ``threads``
    (default: the current count), ATen's dispatch capability (``ATEN_CPU_CAPABILITY``
    applied), the ISA oneDNN and MKL may use (their pins, or ``native:<widest ISA>`` when
    unpinned) and whether deterministic algorithms are on. On CUDA: the GPU model, CUDA and
    cuDNN versions and the TF32/autotune flags (thread count does not change GPU kernels).
    """
    import torch

    dev = torch.device(device)
    out: dict[str, Any] = {
        "torch": str(torch.__version__),
        "device": dev.type,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }
    if dev.type == "cuda":
        flags = determinism_flags()
        out.update(
            gpu=torch.cuda.get_device_name(dev),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            **{
                k: flags[k]
                for k in ("cudnn_benchmark", "cuda_matmul_allow_tf32", "cudnn_allow_tf32", "float32_matmul_precision")
            },
        )
        return out
    cpu = machine_cpu()
    native = f"native:{cpu['cpu_isa']}"
    out.update(
        cpu=cpu["cpu_model"],
        cpu_id=cpu["cpu_id"],
        threads=int(threads or torch.get_num_threads()),
        cpu_capability=str(torch.backends.cpu.get_cpu_capability()),
        mkldnn=bool(torch.backends.mkldnn.enabled),
        **{name: next((os.environ[v] for v in names if os.environ.get(v)), native) for name, names in ISA_PINS.items()},
    )
    return out


def arithmetic_differences(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """``["threads 1 -> 2", ...]`` for two ``arithmetic()`` dicts; ``["unknown"]`` if either is missing."""
    if not a or not b:
        return ["arithmetic unknown" + (" on the reference" if not a else " on the candidate")]
    return [
        f"{k} {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    ]


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
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
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


def collect(
    *,
    argv: list[str] | None = None,
    tier: str = "",
    mode: str = "accuracy",
    device: str = "",
    threads: int | None = None,
) -> dict[str, Any]:
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
        "arith_json": json.dumps(arithmetic(_arith_device(device), threads), sort_keys=True),
        "pid": os.getpid(),
    }


def _arith_device(device: str) -> str:
    """The device whose arithmetic a run's cells use (``auto`` resolves as the runner does)."""
    import torch

    if device in ("", "auto"):
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    return device if device.startswith("cuda") and torch.cuda.is_available() else "cpu"
