"""Configs: strict keys, nested/dotted overrides, type checks, validation messages."""

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pytest

from bench.contract.config import canonical_json, make_config, require
from bench.contract.settings import TrainConfig
from bench.errors import InvalidConfig


@dataclass(frozen=True)
class Inner:
    lr: float = 0.1
    steps: int = 10


@dataclass(frozen=True)
class Outer:
    k: int = 2
    name: Literal["a", "b"] = "a"
    inner: Inner = field(default_factory=Inner)
    tag: str | None = None

    def __post_init__(self):
        require(self.k >= 0, f"k must be >= 0, got {self.k}")


def test_defaults_and_overrides():
    cfg = make_config(Outer, {"k": 3, "inner.lr": 0.5, "inner": {"steps": 7}})
    assert cfg == Outer(k=3, inner=Inner(lr=0.5, steps=7))


def test_unknown_key_lists_valid_keys():
    with pytest.raises(InvalidConfig, match=r"unknown config key\(s\) kk for Outer; valid keys: k, name, inner, tag"):
        make_config(Outer, {"kk": 1})


def test_unknown_nested_key_names_its_path():
    with pytest.raises(InvalidConfig, match=r"inner\.lrr .*valid keys: inner\.lr, inner\.steps"):
        make_config(Outer, {"inner.lrr": 1})


@pytest.mark.parametrize(
    "key,value,msg",
    [
        ("k", "3", "expected an integer"),
        ("k", 2.5, "expected an integer"),
        ("inner.lr", "fast", "expected a number"),
        ("name", "c", "is not one of 'a', 'b'"),
        ("k", -1, "k must be >= 0, got -1"),
    ],
)
def test_bad_values_rejected(key, value, msg):
    with pytest.raises(InvalidConfig, match=msg):
        make_config(Outer, {key: value})


def test_int_for_float_and_optional():
    cfg = make_config(Outer, {"inner.lr": 1, "tag": "x"})
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float) and cfg.tag == "x"


def test_frozen():
    cfg = make_config(Outer)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.k = 5  # type: ignore[misc]


def test_canonical_json_is_stable():
    a = canonical_json(make_config(Outer, {"k": 1, "inner.lr": 0.2}))
    b = canonical_json(make_config(Outer, {"inner.lr": 0.2, "k": 1}))
    assert a == b and a.startswith('{"inner":{"lr":0.2,"steps":10},"k":1')


def test_train_config_validation():
    with pytest.raises(InvalidConfig, match="lr must be > 0"):
        make_config(TrainConfig, {"lr": 0.0})
    with pytest.raises(InvalidConfig, match="warmup_frac must be in"):
        make_config(TrainConfig, {"warmup_frac": 1.0})
    assert TrainConfig(steps=0, epochs=2, batch_size=10).total_steps(105) == 20
    assert TrainConfig(steps=7).total_steps(10_000) == 7
    assert TrainConfig(epochs=1, batch_size=64).total_steps(10) == 1


@dataclass(frozen=True)
class WithRecipe:
    inner: Inner = field(default_factory=lambda: Inner(lr=0.7, steps=3))


def test_nested_override_keeps_field_default_and_merges_dotted_keys():
    cfg = make_config(WithRecipe, {"inner.steps": 9})
    assert cfg.inner == Inner(lr=0.7, steps=9)
    cfg = make_config(Outer, {"inner.lr": 0.3, "inner.steps": 4, "k": 1})
    assert cfg.inner == Inner(lr=0.3, steps=4)


def test_task_settings_deep_dotted_overrides():
    from bench.contract.interface import TaskSettings

    s = make_config(TaskSettings, {"pretrain.train.epochs": 0.5, "pretrain.train.log_every": 7})
    assert s.pretrain.train.epochs == 0.5 and s.pretrain.train.log_every == 7
    assert s.pretrain.train.warmup_frac == 0.05  # the recipe's own default survives
