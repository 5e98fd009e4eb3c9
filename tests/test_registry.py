"""Registries refuse duplicates and answer unknown names with the valid ones."""

import pytest

from bench.errors import DuplicateName, UnknownName
from bench.registry import DATASETS, METHODS, MODELS, Registry


def test_duplicate_refused():
    reg = Registry("widget")
    reg.register("a", 1)
    with pytest.raises(DuplicateName, match="a widget is already registered under the name 'a'"):
        reg.register("a", 2)


def test_unknown_lists_valid_and_suggests():
    reg = Registry("widget")
    reg.register("alpha", 1)
    reg.register("beta", 2)
    with pytest.raises(
        UnknownName, match=r"unknown widget 'alpah'\. Did you mean 'alpha'\? Valid widgets: alpha, beta"
    ):
        reg.get("alpah")


def test_names_filter():
    reg = Registry("widget")
    for n in ("res_a", "res_b", "vit"):
        reg.register(n, n)
    assert reg.names("res_*") == ["res_a", "res_b"] and len(reg) == 3 and "vit" in reg


def test_decorator_form():
    reg = Registry("widget")

    @reg.register("c")
    class C:
        pass

    assert reg.get("c") is C


def test_builtin_registries_populated():
    assert set(METHODS.names()) >= {"scratch", "full_ft", "last_k", "linear_probe"}
    assert set(MODELS.names()) >= {"resnet18", "resnet50", "resnet20", "resnet32"}
    assert set(DATASETS.names()) >= {"mnist5k", "uci-digits", "lfw-faces", "cifar10"}
    with pytest.raises(UnknownName, match="Valid methods: .*full_ft.*last_k"):
        METHODS.get("lastk")


def test_public_api_lazy_exports():
    import bench

    assert bench.run_cell.__module__ == "bench.execute.runner" and bench.Grid.__module__ == "bench.execute.grid"
    with pytest.raises(AttributeError, match="public names: .*CellResult"):
        bench.nope  # noqa: B018
