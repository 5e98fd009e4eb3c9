"""Tests of bench.models.net: registry, torchvision compatibility, the structural map,
freezing semantics (grads, BN mode, no_grad, memory), replace and arch strings."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from bench.errors import InvalidConfig, UnknownName
from bench.models.net import (
    MappedNet,
    build_from_arch_string,
    build_model,
    freeze_all_but_last_blocks,
    freeze_first_blocks,
    head_only,
    list_models,
    model_info,
)
from bench.registry import MODELS


def small(name: str = "resnet20", **kwargs) -> MappedNet:
    torch.manual_seed(0)
    return build_model(name, 10, width=0.25, **kwargs)


def n_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


# ---------------------------------------------------------------------------- registry


def test_registry_lists_the_resnets_sorted():
    names = list_models()
    assert names == sorted(names)
    assert {"resnet18", "resnet20", "resnet32", "resnet50"} <= set(names)  # method packages add more
    assert list_models("resnet[23]?") == ["resnet20", "resnet32", "resnet34"]  # resnet34: NASOA's series


@pytest.mark.parametrize("name", MODELS.names())
def test_every_model_builds_and_trains_at_width_quarter(name):
    model = small(name)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 10)
    out.square().mean().backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert model_info(name).name == name


def test_unknown_model_lists_valid_names():
    with pytest.raises(UnknownName, match=r"Did you mean 'resnet18'") as err:
        build_model("resnet19", 10)
    assert all(name in str(err.value) for name in list_models())


def test_imagenet_weight_names_are_real_torchvision_enums():
    for name in MODELS.names():
        weights = model_info(name).imagenet_weights
        if weights is None:
            assert model_info(name).family != "resnet", f"{name}: torchvision ResNets must name their weights"
            continue
        enum_name, member = weights.split(".")
        assert getattr(getattr(torchvision.models, enum_name), member).meta["num_params"] == n_params(
            build_model(name, 1000)
        )


def test_bad_options_are_clear_errors():
    with pytest.raises(InvalidConfig, match="valid options: num_classes, width, shortcut"):
        build_model("resnet20", 10, depth=3)
    with pytest.raises(InvalidConfig, match=r"'A' .* or 'B'"):
        build_model("resnet20", 10, shortcut="C")
    with pytest.raises(InvalidConfig, match="width must be a number > 0"):
        build_model("resnet18", 10, width=0)
    with pytest.raises(InvalidConfig, match="num_classes must be a positive integer"):
        build_model("resnet18", 0)


# ---------------------------------------------------------------------------- torchvision


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_compatible_at_full_width(name):
    torch.manual_seed(0)
    ours = build_model(name, 1000)
    theirs = getattr(torchvision.models, name)()
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    ours.load_state_dict(b, strict=True)
    ours.eval(), theirs.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x))


# ---------------------------------------------------------------------------- sizes


def test_cifar_parameter_counts():
    assert n_params(build_model("resnet20", 10)) == 269_722
    assert n_params(build_model("resnet32", 10)) == 464_154
    # option B adds two 1x1 conv + BN projections (16->32: 576, 32->64: 2,176)
    assert n_params(build_model("resnet20", 10, shortcut="B")) == 272_474
    assert n_params(build_model("resnet32", 10, shortcut="B")) == 466_906


def test_option_a_shortcut_is_parameter_free_and_pads_zeros():
    model = build_model("resnet20", 10, shortcut="A")
    shortcut = model.layer2[0].downsample
    assert n_params(shortcut) == 0
    x = torch.randn(1, 16, 8, 8)
    y = shortcut(x)
    assert y.shape == (1, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


@pytest.mark.parametrize(
    "name,width,stem,last",
    [
        ("resnet20", 0.5, 8, 32),
        ("resnet20", 0.25, 4, 16),
        ("resnet20", 0.3, 5, 19),
        ("resnet18", 0.25, 16, 128),
        ("resnet50", 0.25, 16, 512),
        ("resnet50", 0.5, 32, 1024),
    ],
)
def test_width_multiplier_channels(name, width, stem, last):
    model = build_model(name, 10, width=width)
    assert model.conv1.out_channels == stem
    assert model.fc.in_features == last
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


# ---------------------------------------------------------------------------- map


@pytest.mark.parametrize(
    "name,stage_sizes",
    [
        ("resnet18", (2, 2, 2, 2)),
        ("resnet50", (3, 4, 6, 3)),
        ("resnet20", (3, 3, 3)),
        ("resnet32", (5, 5, 5)),
    ],
)
def test_block_counts(name, stage_sizes):
    s = small(name).structure
    assert tuple(len(stage) for stage in s.stages) == stage_sizes
    assert len(s.blocks) == sum(stage_sizes)
    assert s.head == ("avgpool", "flatten", "fc") and s.classifier == "fc"
    assert s.stage_of(s.stages[-1][0]) == len(stage_sizes) - 1
    assert s.prefix_len_for_blocks(2) == len(s.stem) + 2


@pytest.mark.parametrize("name", ["resnet18", "resnet32"])
def test_sequence_is_forward_order(name):
    model = small(name)
    log: list[str] = []
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: log.append(n)) for n, m in model.parts()]
    model(torch.randn(2, 3, 32, 32))
    for h in handles:
        h.remove()
    assert log == list(model.structure.sequence)


def test_stage_of_and_prefix_len():
    s = small("resnet32").structure
    assert s.stem == ("conv1", "bn1", "relu")
    assert s.stages[1] == tuple(f"layer2.{j}" for j in range(5))
    assert [s.stage_of(b) for b in ("layer1.0", "layer2.4", "layer3.0")] == [0, 1, 2]
    assert s.prefix_len_for_blocks(0) == 3 and s.prefix_len_for_blocks(15) == 18
    with pytest.raises(UnknownName, match="layer1.0"):
        s.stage_of("conv1")
    with pytest.raises(ValueError, match=r"0\.\.15"):
        s.prefix_len_for_blocks(16)


# ---------------------------------------------------------------------------- freezing


def trainable_by_entries(model: MappedNet, start: int) -> int:
    return sum(n_params(m) for _, m in model.parts()[start:])


@pytest.mark.parametrize("n", [0, 2, 3, 7, 12, 14, 15])
def test_set_frozen_prefix_requires_grad_pattern(n):
    model = small()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    model.set_frozen_prefix(n)
    # stale grads of frozen tensors are dropped so an optimizer cannot move them
    assert all((p.grad is None) == (not p.requires_grad) for p in model.parameters())
    assert model.frozen_prefix == n
    assert n_params(model, trainable_only=True) == trainable_by_entries(model, n)
    for i, (_, m) in enumerate(model.parts()):
        assert all(p.requires_grad == (i >= n) for p in m.parameters())
    model.set_frozen_prefix(0)
    assert n_params(model, trainable_only=True) == n_params(model)


def test_freeze_helpers():
    model = small()  # resnet20: stem 3, 9 blocks, head 3
    freeze_all_but_last_blocks(model, 2)
    assert model.frozen_prefix == 3 + 7
    assert n_params(model, trainable_only=True) == n_params(model.layer3[1]) + n_params(model.layer3[2]) + n_params(
        model.fc
    )
    freeze_all_but_last_blocks(model, 0)
    assert n_params(model, trainable_only=True) == n_params(model.fc)
    freeze_all_but_last_blocks(model, 9)
    assert model.frozen_prefix == 0
    freeze_first_blocks(model, 0)
    assert model.frozen_prefix == 3 and not model.conv1.weight.requires_grad
    freeze_first_blocks(model, 4)
    assert model.frozen_prefix == 7 and model.layer2[2].conv1.weight.requires_grad
    head_only(model)
    assert model.frozen_prefix == len(model.structure.sequence) - 1
    assert n_params(model, trainable_only=True) == n_params(model.fc)
    for bad in (-1, 10, 2.0):
        with pytest.raises(ValueError, match=r"0\.\.9"):
            freeze_all_but_last_blocks(model, bad)
        with pytest.raises(ValueError, match=r"0\.\.9"):
            freeze_first_blocks(model, bad)
    with pytest.raises(ValueError, match=r"0\.\.15"):
        model.set_frozen_prefix(16)


def test_frozen_batchnorm_stays_in_eval_mode():
    model = small()
    freeze_first_blocks(model, 3)
    model.train()
    assert not model.bn1.training and not model.layer1[2].bn2.training
    assert model.layer2[0].bn1.training and model.fc.training
    model.eval()
    assert not model.layer2[0].bn1.training
    model.train()
    model.set_frozen_prefix(0)
    assert model.bn1.training and model.layer1[2].bn2.training


def test_sgd_step_leaves_frozen_tensors_bit_identical():
    model = small()
    freeze_first_blocks(model, 4)
    frozen = {n for n, _ in model.parts()[: model.frozen_prefix]}

    def is_frozen(key: str) -> bool:
        return any(key == e or key.startswith(e + ".") for e in frozen)

    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    model.train()
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    after = model.state_dict()
    checked = {"frozen": 0, "changed": 0}
    for k, v in after.items():
        if k.endswith("num_batches_tracked"):
            continue
        if is_frozen(k):
            assert torch.equal(v, before[k]), k
            checked["frozen"] += 1
        else:
            assert not torch.equal(v, before[k]), k
            checked["changed"] += 1
    assert checked["frozen"] > 20 and checked["changed"] > 20


def test_frozen_prefix_runs_under_no_grad():
    model = small()
    seen: dict[str, bool] = {}
    model.layer1[2].register_forward_hook(lambda m, i, o: seen.__setitem__("prefix", o.requires_grad))
    # an input that requires grad would drag the prefix into the graph without no_grad
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    assert model(x).requires_grad and seen["prefix"]
    freeze_first_blocks(model, 3)
    out = model(x)
    assert seen["prefix"] is False
    assert out.requires_grad


def saved_bytes(model: MappedNet, x: torch.Tensor) -> int:
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    return total


def test_frozen_prefix_saves_activation_memory():
    model = small("resnet18")
    model.train()
    x = torch.randn(4, 3, 64, 64, requires_grad=True)  # without no_grad the prefix would save
    full = saved_bytes(model, x)
    freeze_all_but_last_blocks(model, 2)
    last_stage = saved_bytes(model, x)
    head_only(model)
    probe = saved_bytes(model, x)
    assert probe < full / 100
    assert probe < last_stage < full


# ---------------------------------------------------------------------------- replace


def test_replace_block_changes_forward():
    model = small().eval()
    x = torch.randn(2, 3, 32, 32)
    before = model(x)
    old = model.replace("layer2.1", nn.Identity())
    assert isinstance(old, nn.Module) and isinstance(dict(model.parts())["layer2.1"], nn.Identity)
    after = model(x)
    assert after.shape == before.shape and not torch.allclose(after, before)


def test_replace_inner_conv_with_zero_padded_5x5_keeps_output():
    model = small("resnet18").eval()
    x = torch.randn(2, 3, 32, 32)
    before = model(x)
    conv = model.layer4[0].conv1
    wide = nn.Conv2d(conv.in_channels, conv.out_channels, 5, conv.stride, 2, bias=False)
    wide.weight.data = nn.functional.pad(conv.weight.data, (1, 1, 1, 1))
    model.replace("layer4.0.conv1", wide)
    assert model.layer4[0].conv1 is wide
    assert torch.allclose(model(x), before, atol=1e-5)


def test_replace_inside_frozen_prefix_is_frozen():
    model = small()
    freeze_first_blocks(model, 2)
    model.train()
    new_bn = nn.BatchNorm2d(model.layer1[0].bn1.num_features)
    model.replace("layer1.0.bn1", new_bn)
    assert not new_bn.training and not new_bn.weight.requires_grad
    new_fc = nn.Linear(model.fc.in_features, 10)
    model.replace("fc", new_fc)
    assert new_fc.weight.requires_grad
    with pytest.raises(UnknownName, match="sequence entries: conv1, bn1"):
        model.replace("layer9.0", nn.Identity())
    with pytest.raises(UnknownName):
        model.replace("layer1", nn.Sequential())  # would orphan entries layer1.0..2
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 10)


def test_reset_classifier_changes_output_dim():
    model = small()
    model.reset_classifier(7)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 7)
    assert model.arch_string() == "resnet20(num_classes=7,shortcut='A',width=0.25)"


def test_deepcopy_keeps_a_working_map():
    model = small().eval()
    clone = copy.deepcopy(model)
    assert all(a is not b for (_, a), (_, b) in zip(model.parts(), clone.parts()))
    assert dict(clone.parts())["layer1.0"] is clone.layer1[0]
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(model(x), clone(x))


# ---------------------------------------------------------------------------- arch strings


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("resnet18", {}),
        ("resnet50", {}),
        ("resnet20", {"shortcut": "B"}),
        ("resnet32", {}),
    ],
)
def test_arch_string_round_trip(name, kwargs):
    model = small(name, **kwargs)
    s = model.arch_string()
    assert s.startswith(f"{name}(num_classes=10,") and "width=0.25" in s
    rebuilt = build_from_arch_string(s)
    assert rebuilt.arch_string() == s
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_arch_string_canonical_form_and_errors():
    assert small("resnet18").arch_string() == "resnet18(num_classes=10,width=0.25)"
    with pytest.raises(InvalidConfig, match="malformed architecture string"):
        build_from_arch_string("resnet18(10)")
    with pytest.raises(InvalidConfig, match="lacks num_classes"):
        build_from_arch_string("resnet18(width=1.0)")
    with pytest.raises(UnknownName, match="Valid models"):
        build_from_arch_string("vgg16(num_classes=10)")


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenetv2_cifar", "etnas_a", "darts_v2_8"])
def test_the_meta_built_structure_is_the_real_models(name):
    """Collection checks read the structure of a model built on the meta device: the same blocks."""
    from bench.models.net import structure_of

    assert structure_of(name, 0.25) == build_model(name, num_classes=10, width=0.25).structure


def test_a_model_that_cannot_be_built_on_meta_is_sized_on_the_cpu():
    """The RegNets copy weights while building, which the meta device cannot: built on the CPU."""
    from bench.models.net import structure_of

    assert structure_of("regnet_y_400mf", 0.25) == build_model("regnet_y_400mf", num_classes=10, width=0.25).structure
