"""Cache keys hold the arithmetic: a cache filled under one set of threads / ISA pins is never
read under another (the cross-contamination that made `make bench; make test` fail)."""

import json

import pytest
import torch

from bench import cache, env
from bench.contract.settings import TrainConfig
from bench.models.pretrain import PretrainRecipe, source_path

RECIPE = PretrainRecipe(train=TrainConfig(epochs=0.1, batch_size=32, log_every=1000))
PINS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_CBWR")


@pytest.fixture
def unpinned(monkeypatch):
    for name in PINS[1:]:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_arithmetic_names_what_changes_cpu_results(unpinned):
    a = env.arithmetic("cpu")
    assert set(a) == {
        "torch",
        "device",
        "deterministic",
        "cpu",
        "cpu_id",
        "threads",
        "cpu_capability",
        "mkldnn",
        "onednn_isa",
        "mkl_cbwr",
    }
    assert (a["cpu"], a["cpu_id"]) == (env.machine_cpu()["cpu_model"], env.machine_cpu()["cpu_id"])
    assert a["torch"] == str(torch.__version__) and a["device"] == "cpu"
    assert a["threads"] == torch.get_num_threads()
    assert a["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    native = f"native:{env.machine_cpu()['cpu_isa']}"
    assert a["onednn_isa"] == native and a["mkl_cbwr"] == native
    unpinned.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    unpinned.setenv("MKL_CBWR", "AVX2")
    pinned = env.arithmetic("cpu")
    assert (pinned["onednn_isa"], pinned["mkl_cbwr"]) == ("AVX2", "AVX2")
    assert env.arithmetic("cpu", threads=7)["threads"] == 7
    assert env.arithmetic_differences(a, pinned) == [f"mkl_cbwr {native} -> AVX2", f"onednn_isa {native} -> AVX2"]
    assert env.arithmetic_differences(a, dict(a)) == []
    assert env.arithmetic_differences(None, a) == ["arithmetic unknown on the reference"]


def test_collect_records_the_arithmetic(unpinned):
    info = env.collect(device="cpu", threads=3)
    assert json.loads(info["arith_json"]) == env.arithmetic("cpu", 3)


def test_cache_key_changes_with_threads_pins_and_inputs(unpinned):
    base = cache.cache_key({"a": 1})
    assert cache.cache_key({"a": 1}) == base
    assert cache.cache_key({"a": 2}) != base
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(saved + 1)
        assert cache.cache_key({"a": 1}) != base
    finally:
        torch.set_num_threads(saved)
    assert cache.cache_key({"a": 1}) == base
    for name, value in (("ONEDNN_MAX_CPU_ISA", "SSE41"), ("MKL_CBWR", "COMPATIBLE")):
        unpinned.setenv(name, value)
        assert cache.cache_key({"a": 1}) != base, name
        unpinned.delenv(name)


def test_source_checkpoint_path_moves_with_the_arithmetic(unpinned):
    """The smoke gate's pins (Makefile SMOKE_ENV) give other checkpoints than `make bench`'s native ISA."""
    native = source_path("resnet20", 0.25, "mnist5k", 16, RECIPE, 0)
    unpinned.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    unpinned.setenv("MKL_CBWR", "AVX2")
    pinned = source_path("resnet20", 0.25, "mnist5k", 16, RECIPE, 0)
    assert pinned != native and pinned.parent == native.parent == cache.cache_dir() / "sources"
    assert pinned.name.startswith("resnet20-w0.25-mnist5k-16px-s0-")


def test_cached_computes_once_then_hits(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(3)}

    path = tmp_path / "kind" / "thing-abc.pt"
    first, hit = cache.cached(path, compute)
    again, hit2 = cache.cached(path, compute)
    assert (hit, hit2, len(calls)) == (False, True, 1)
    assert torch.equal(first["x"], again["x"])
    text, hit3 = cache.cached(
        tmp_path / "t.json",
        lambda: [1, 2],
        load=lambda p: json.loads(p.read_text()),
        save=lambda v, p: cache.atomic_write_text(json.dumps(v), p),
    )
    assert (text, hit3) == ([1, 2], False)
    assert json.loads((tmp_path / "t.json").read_text()) == [1, 2]


def test_a_failing_compute_leaves_no_entry(tmp_path):
    path = tmp_path / "bad.pt"

    def boom():
        raise RuntimeError("nope")

    with pytest.raises(RuntimeError):
        cache.cached(path, boom)
    assert not path.exists()
    assert cache.cached(path, lambda: 5)[1] is False


def test_a_miss_leaves_the_callers_random_streams_as_a_hit_does(tmp_path):
    import random

    import numpy as np

    def compute():
        torch.manual_seed(123)
        np.random.seed(5)
        random.seed(7)
        return {"x": torch.randn(2) + float(np.random.rand()) + random.random()}

    def draw():
        return torch.rand(1).item(), float(np.random.rand()), random.random()

    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    cache.cached(tmp_path / "a.pt", compute)  # miss
    after_miss = draw()
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    cache.cached(tmp_path / "a.pt", compute)  # hit
    assert draw() == after_miss
