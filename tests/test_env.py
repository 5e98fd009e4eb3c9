"""Provenance: every runs column is collected, git state is right, flags are live."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import re
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import torch

from bench import env
from bench.results.store import Store

GIT_ID = ["-c", "user.name=Bench Test", "-c", "user.email=bench@example.invalid", "-c", "commit.gpgsign=false"]


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(["git", *GIT_ID, *args], cwd=repo, check=True, capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git checkout with one commit of ``train.py``."""
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q")
    (path / "train.py").write_text("print('v1')\n")
    git(path, "add", "train.py")
    git(path, "commit", "-q", "-m", "first")
    return path


@pytest.fixture
def outside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory and package location that are in no git checkout."""
    path = tmp_path / "plain"
    path.mkdir()
    monkeypatch.chdir(path)
    monkeypatch.setattr(env, "PACKAGE_DIR", path)
    return path


def test_collect_returns_every_runs_column(tmp_path: Path):
    info = env.collect(argv=["pytest", "suites", "-n", "2"], tier="smoke", mode="speed", device="cpu", threads=3)
    with Store(tmp_path / "r.db") as store:
        columns = [c.name for c in store.db["runs"].columns]
        run_id = store.start_run(info)  # the dict is accepted as-is
        stored = store.db["runs"].get(run_id)
    assert list(info) == [
        c
        for c in columns  # tag is the caller's label, not provenance
        if c not in ("run_id", "started_at", "ended_at", "status", "tag", "heartbeat_at")  # the writer stamps it
    ]
    assert {k: stored[k] for k in info} == info
    assert (info["tier"], info["mode"], info["device"], info["cpu_threads"]) == ("smoke", "speed", "cpu", 3)
    assert json.loads(info["argv"]) == ["pytest", "suites", "-n", "2"]
    assert info["bench_version"] == importlib.metadata.version("archbench")
    assert (info["python"], info["torch"]) == (platform.python_version(), torch.__version__)
    assert info["cpu_count"] >= 1 and isinstance(info["host"], str) and info["host"]


def test_cpu_threads_defaults_to_torch_threads():
    assert env.collect()["cpu_threads"] == torch.get_num_threads()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_no_gpu_fields_and_cuda_stays_uninitialised():
    info = env.collect(device="cpu")
    assert {k: info[k] for k in ("cuda", "cudnn", "gpu_name", "gpu_count", "driver")} == dict.fromkeys(
        ("cuda", "cudnn", "gpu_name", "gpu_count", "driver")
    )
    assert not torch.cuda.is_initialized()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_fields_on_a_gpu():
    info = env.collect(device="cuda:0")
    assert info["gpu_name"] == torch.cuda.get_device_name(0)
    assert info["gpu_count"] == torch.cuda.device_count() >= 1
    assert info["cuda"] == torch.version.cuda
    assert info["cudnn"] == str(torch.backends.cudnn.version())
    assert info["driver"] is not None and re.fullmatch(r"\d+(\.\d+)+", info["driver"])


def test_git_fields_inside_a_checkout(repo: Path, monkeypatch: pytest.MonkeyPatch):
    head = git(repo, "rev-parse", "HEAD")
    (repo / "sub").mkdir()
    monkeypatch.chdir(repo / "sub")
    info = env.collect()
    assert (info["git_sha"], info["git_dirty"]) == (head, 0)
    (repo / "notes.txt").write_text("untracked files do not count\n")
    assert env.collect()["git_dirty"] == 0
    (repo / "train.py").write_text("print('v2')\n")
    info = env.collect()
    assert (info["git_sha"], info["git_dirty"]) == (head, 1)


def test_git_fields_before_the_first_commit(tmp_path: Path):
    git(tmp_path, "init", "-q")
    assert env.git_info(tmp_path) == {"git_sha": None, "git_dirty": 0}


def test_git_fields_are_none_outside_a_checkout(outside: Path):
    info = env.collect()
    assert (info["git_sha"], info["git_dirty"]) == (None, None)
    assert env.git_info(outside) == {"git_sha": None, "git_dirty": None}


def test_git_falls_back_to_the_package_checkout(repo: Path, outside: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(env, "PACKAGE_DIR", repo)
    assert env.collect()["git_sha"] == git(repo, "rev-parse", "HEAD")


def test_git_missing_never_raises(repo: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(repo)
    monkeypatch.setenv("PATH", str(repo))  # no git executable on PATH
    assert env.git_info() == {"git_sha": None, "git_dirty": None}


def test_flags_follow_torch_settings():
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
    )
    try:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = True
        on = json.loads(env.collect()["flags_json"])
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = False
        off = json.loads(env.collect()["flags_json"])
        direct = env.determinism_flags()  # before the worker's own settings come back
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = saved[2]
    assert (on["deterministic_algorithms"], on["deterministic_warn_only"], on["cudnn_benchmark"]) == (True, True, True)
    assert (off["deterministic_algorithms"], off["deterministic_warn_only"], off["cudnn_benchmark"]) == (
        False,
        False,
        False,
    )
    assert off == direct
    assert set(off) == {
        "deterministic_algorithms",
        "deterministic_warn_only",
        "cudnn_deterministic",
        "cudnn_benchmark",
        "cuda_matmul_allow_tf32",
        "cudnn_allow_tf32",
        "float32_matmul_precision",
        "cublas_workspace_config",
    }
    assert off["float32_matmul_precision"] == torch.get_float32_matmul_precision()


def test_utc_now_is_fixed_width_iso_in_utc():
    stamp = env.utc_now()
    parsed = datetime.fromisoformat(stamp)
    assert parsed.utcoffset() == timedelta(0)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", stamp)


def test_xdist_workers_share_the_cores():
    """No test module may reset the thread count at import: two workers with a thread per core
    each made tests of many small ops 10-20x slower (see tests/conftest.py)."""
    import os

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers < 2:
        pytest.skip("runs under pytest-xdist (make test)")
    assert torch.get_num_threads() == max(1, (os.cpu_count() or 1) // workers)
