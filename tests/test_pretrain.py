"""Source weights: cache key, cache hit on second use, atomic writes, clear offline errors."""

import os

import pytest
import torch

from bench import cache
from bench.cache import atomic_save
from bench.contract.settings import TrainConfig
from bench.errors import InvalidConfig, WeightsNotFound
from bench.models.pretrain import PretrainRecipe, imagenet_state_dict, pretrained_source, source_path

RECIPE = PretrainRecipe(train=TrainConfig(epochs=0.1, batch_size=32, log_every=1000))


def test_key_depends_on_every_input():
    base = source_path("resnet20", 0.25, "mnist5k", 16, RECIPE, 0)
    others = [
        source_path("resnet32", 0.25, "mnist5k", 16, RECIPE, 0),
        source_path("resnet20", 0.5, "mnist5k", 16, RECIPE, 0),
        source_path("resnet20", 0.25, "uci-digits", 16, RECIPE, 0),
        source_path("resnet20", 0.25, "mnist5k", 32, RECIPE, 0),
        source_path("resnet20", 0.25, "mnist5k", 16, PretrainRecipe(train=TrainConfig(epochs=0.2)), 0),
        source_path("resnet20", 0.25, "mnist5k", 16, RECIPE, 1),
    ]
    assert len({base, *others}) == 7
    assert base.parent == cache.cache_dir() / "sources" and base.name.startswith("resnet20-w0.25-mnist5k-16px-s0-")


def test_cache_env_override(bench_cache):
    assert str(cache.cache_dir()) == bench_cache


def test_pretrain_then_cache_hit():
    dev = torch.device("cpu")
    state, meta = pretrained_source("resnet20", 0.25, "mnist5k", 16, RECIPE, 3, dev)
    assert meta["cache_hit"] is False and 0 <= meta["source_test_top1_pct"] <= 100 and meta["pretrain_s"] > 0
    assert os.path.exists(meta["path"])
    state2, meta2 = pretrained_source("resnet20", 0.25, "mnist5k", 16, RECIPE, 3, dev)
    assert meta2["cache_hit"] is True and meta2["source_test_top1_pct"] == meta["source_test_top1_pct"]
    assert all(torch.equal(state[k], state2[k]) for k in state)
    rng = torch.random.get_rng_state()
    pretrained_source("resnet20", 0.25, "mnist5k", 16, RECIPE, 4, dev)  # a miss must not move the caller's RNG
    assert torch.equal(rng, torch.random.get_rng_state())


def test_atomic_save_leaves_no_partial_file(tmp_path):
    target = tmp_path / "w.pt"
    atomic_save({"a": torch.ones(3)}, target)
    assert torch.load(target)["a"].sum() == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError):
        atomic_save({"x": Unpicklable()}, tmp_path / "bad.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pt"]


def test_imagenet_offline_error_names_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsNotFound) as err:
        imagenet_state_dict("resnet18", 1.0)
    msg = str(err.value)
    assert (
        "resnet18-f37072fd.pth" in msg
        and str(tmp_path / "hub" / "checkpoints") in msg
        and "download.pytorch.org" in msg
    )


def test_imagenet_from_seeded_cache(tmp_path, monkeypatch):
    from torchvision.models import resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    reference = resnet18().state_dict()
    torch.save(reference, folder / "resnet18-f37072fd.pth")
    loaded = imagenet_state_dict("resnet18", 1.0)
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)


def test_imagenet_rejects_width_and_models_without_weights():
    with pytest.raises(InvalidConfig, match="only at width 1.0"):
        imagenet_state_dict("resnet18", 0.5)
    with pytest.raises(InvalidConfig, match="'resnet20' has no ImageNet weights"):
        imagenet_state_dict("resnet20", 1.0)
