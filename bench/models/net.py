"""Architecture families whose forward is an ordered, named list of parts.

Every model is a ``MappedNet``: an ``nn.Module`` whose forward is *exactly* the
composition, in order, of the entries of its ``StructuralMap``::

    sequence = stem entries + blocks (stage by stage) + head entries

For ``resnet18`` that is ``conv1, bn1, relu, maxpool, layer1.0, layer1.1, ..., layer4.1,
avgpool, flatten, fc`` (``classifier = "fc"``). Because nothing else happens in forward,
methods work on parts by name instead of by parameter-name regexes:

* freeze a prefix: ``model.set_frozen_prefix(n)`` freezes entries ``[0, n)``:
  ``requires_grad=False`` (and stale ``.grad`` cleared), kept in eval mode so BatchNorm
  statistics stay fixed even after ``model.train()``, and run under ``torch.no_grad()``
  so the prefix stores no activations for backward. Entries ``[n, end)`` get
  ``requires_grad=True`` and follow the model's train/eval mode. ``n = 0`` freezes
  nothing. Helpers in block units (k must lie in ``0..len(structure.blocks)``):

  - ``freeze_first_blocks(model, k)``: stem + first k blocks frozen (k = 0: stem only);
  - ``freeze_all_but_last_blocks(model, k)``: only the last k blocks and the head train
    (k = 0: head only; k = all blocks: nothing frozen, the stem trains too);
  - ``head_only(model)``: everything before the classifier frozen (linear probe).

* replace or mutate: ``model.replace("layer4.1", new_block)`` or
  ``model.replace("layer4.1.conv2", conv5x5)`` swaps any sequence entry or any submodule
  by dotted name. A replacement inside the frozen prefix is frozen too.
  ``model.reset_classifier(c)`` puts a fresh ``nn.Linear(in_features, c)`` in the head.

* rebuild: ``model.arch_string()`` (``"resnet18(num_classes=10,width=0.25)"``, kwargs
  sorted, defaults spelled out) and ``build_from_arch_string(s)`` round-trip. The string
  names the *constructor* arguments; a method that mutates a model (e.g. 5x5 kernels)
  records its own architecture string on top.

Models: ``build_model(name, num_classes, width=1.0, **kwargs)``; the ResNet families live
in ``bench.models.resnets`` (resnet18, resnet50, resnet20, resnet32).

A new family subclasses ``MappedNet``, builds its parts as attributes and calls
``self._set_structure(StructuralMap(...), arch_name, arch_kwargs)``, then registers a
``ModelInfo`` in ``bench.registry.MODELS``.
"""

from __future__ import annotations

import ast
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from bench.errors import InvalidConfig, UnknownName
from bench.registry import MODELS


@dataclass(frozen=True)
class StructuralMap:
    """Names of a model's forward entries: stem, blocks grouped by stage, head."""

    stem: tuple[str, ...]
    stages: tuple[tuple[str, ...], ...]
    head: tuple[str, ...]
    classifier: str

    def __post_init__(self) -> None:
        if not self.stages or any(not stage for stage in self.stages):
            raise ValueError(f"every stage needs at least one block, got stages={self.stages!r}")
        seq = self.sequence
        dupes = sorted({n for n in seq if seq.count(n) > 1})
        if dupes:
            raise ValueError(f"entry names must be unique, repeated: {dupes}")
        if self.classifier not in self.head:
            raise ValueError(f"classifier {self.classifier!r} must be a head entry, head={self.head}")

    @property
    def blocks(self) -> tuple[str, ...]:
        """All block names, in forward order."""
        return tuple(b for stage in self.stages for b in stage)

    @property
    def sequence(self) -> tuple[str, ...]:
        """Every entry in forward order: stem + blocks + head."""
        return self.stem + self.blocks + self.head

    def stage_of(self, block_name: str) -> int:
        """0-based index of the stage holding ``block_name``."""
        for i, stage in enumerate(self.stages):
            if block_name in stage:
                return i
        raise UnknownName(f"'{block_name}' is not a block; blocks: {', '.join(self.blocks)}")

    def prefix_len_for_blocks(self, k: int) -> int:
        """Number of sequence entries covering the stem and the first ``k`` blocks."""
        _check_k(k, len(self.blocks))
        return len(self.stem) + k


def _check_k(k: int, num_blocks: int) -> None:
    """Reject a block count outside 0..num_blocks with the valid range in the message."""
    if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= num_blocks:
        raise InvalidConfig(f"k must be an integer in 0..{num_blocks} (the number of blocks), got {k!r}")


class MappedNet(nn.Module):
    """An ``nn.Module`` whose forward is the ordered composition of its structural map."""

    structure: StructuralMap

    def __init__(self) -> None:
        super().__init__()
        self._parts: tuple[nn.Module, ...] = ()
        self._frozen_parts: tuple[nn.Module, ...] = ()
        self._live_parts: tuple[nn.Module, ...] = ()
        self._frozen_prefix = 0
        self._arch = ""
        self._arch_kwargs: dict[str, Any] = {}

    def _set_structure(self, structure: StructuralMap, arch_name: str, arch_kwargs: dict[str, Any]) -> None:
        """Declare the forward order (called once by subclasses after building parts)."""
        self.structure = structure
        self._arch = arch_name
        self._arch_kwargs = dict(arch_kwargs)
        self._refresh()
        covered = {id(p) for m in self._parts for p in m.parameters()}
        outside = [n for n, p in self.named_parameters() if id(p) not in covered]
        if outside:
            raise ValueError(f"{arch_name}: parameters outside every map entry: {outside[:5]}")

    def _lookup(self, name: str) -> nn.Module:
        """The submodule at dotted ``name`` or ``UnknownName`` listing the entries."""
        try:
            return self.get_submodule(name)
        except AttributeError:
            raise UnknownName(
                f"{self._arch} has no submodule '{name}'; sequence entries: "
                f"{', '.join(self.structure.sequence)} (dotted names inside them also work)"
            ) from None

    def _refresh(self) -> None:
        """Re-resolve the cached module list (after a structure change or replace)."""
        self._parts = tuple(self._lookup(n) for n in self.structure.sequence)
        self._split()

    def _split(self) -> None:
        n = self._frozen_prefix
        self._frozen_parts, self._live_parts = self._parts[:n], self._parts[n:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Frozen prefix under ``no_grad`` (stores no activations), then the rest."""
        if self._frozen_parts:
            with torch.no_grad():
                for m in self._frozen_parts:
                    x = m(x)
        for m in self._live_parts:
            x = m(x)
        return x

    def parts(self) -> list[tuple[str, nn.Module]]:
        """(name, module) for every entry, in forward order."""
        return list(zip(self.structure.sequence, self._parts))

    @property
    def frozen_prefix(self) -> int:
        """Number of leading sequence entries that are frozen."""
        return self._frozen_prefix

    def set_frozen_prefix(self, n: int) -> MappedNet:
        """Freeze entries [0, n) (no grad, eval mode, no_grad forward); train [n, end)."""
        total = len(self._parts)
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= total:
            raise InvalidConfig(
                f"frozen prefix must be an integer in 0..{total} (sequence entries of "
                f"{self._arch}: {', '.join(self.structure.sequence)}), got {n!r}"
            )
        self._frozen_prefix = n
        for i, m in enumerate(self._parts):
            _set_frozen(m, i < n, self.training)
        self._split()
        return self

    def train(self, mode: bool = True) -> MappedNet:
        """Like ``nn.Module.train`` but frozen entries stay in eval mode."""
        super().train(mode)
        for m in self._frozen_parts:
            m.eval()
        return self

    def _entry_index(self, name: str) -> int:
        """Index of the sequence entry that is or contains ``name`` (-1 for none)."""
        for i, entry in enumerate(self.structure.sequence):
            if name == entry or name.startswith(entry + "."):
                return i
        return -1

    def replace(self, name: str, module: nn.Module) -> nn.Module:
        """Swap the submodule at dotted ``name`` for ``module``; returns the old one."""
        if not isinstance(module, nn.Module):
            raise TypeError(f"replace('{name}', ...) needs an nn.Module, got {type(module).__name__}")
        old = self._lookup(name)
        parent_name, _, attr = name.rpartition(".")
        parent = self.get_submodule(parent_name) if parent_name else self
        setattr(parent, attr, module)
        try:
            self._refresh()
        except UnknownName:
            setattr(parent, attr, old)
            self._refresh()
            raise
        index = self._entry_index(name)
        _set_frozen(module, 0 <= index < self._frozen_prefix, self.training)
        return old

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a fresh ``nn.Linear(in_features, num_classes)``."""
        old = self._lookup(self.structure.classifier)
        if not isinstance(old, nn.Linear):
            raise TypeError(f"classifier '{self.structure.classifier}' is {type(old).__name__}, not nn.Linear")
        new = nn.Linear(
            old.in_features, num_classes, bias=old.bias is not None, device=old.weight.device, dtype=old.weight.dtype
        )
        self.replace(self.structure.classifier, new)
        if "num_classes" in self._arch_kwargs:
            self._arch_kwargs["num_classes"] = num_classes

    def arch_string(self) -> str:
        """Canonical constructor string, e.g. ``resnet18(num_classes=10,width=0.25)``."""
        args = ",".join(f"{k}={v!r}" for k, v in sorted(self._arch_kwargs.items()))
        return f"{self._arch}({args})"


def _set_frozen(module: nn.Module, frozen: bool, training: bool) -> None:
    """Freeze (no grad, stale grads dropped, eval) or unfreeze (grad, follow ``training``)."""
    for p in module.parameters():
        p.requires_grad_(not frozen)
        if frozen:
            p.grad = None
    module.train(training and not frozen)


def freeze_first_blocks(model: MappedNet, k: int) -> MappedNet:
    """Freeze the stem and the first ``k`` blocks; the rest trains."""
    return model.set_frozen_prefix(model.structure.prefix_len_for_blocks(k))


def freeze_all_but_last_blocks(model: MappedNet, k: int) -> MappedNet:
    """Train only the last ``k`` blocks and the head (k = all blocks: nothing frozen)."""
    num_blocks = len(model.structure.blocks)
    _check_k(k, num_blocks)
    if k == num_blocks:
        return model.set_frozen_prefix(0)
    return model.set_frozen_prefix(model.structure.prefix_len_for_blocks(num_blocks - k))


SCOPES = ("small", "medium", "large", "full")


def scope_blocks(structure: StructuralMap, scope: str) -> tuple[str, ...]:
    """Blocks of a search scope that grows stage by stage from the end of the network.

    ``small`` is the last stage, ``medium`` the last two, ``large`` the last three and
    ``full`` every stage (a network with fewer stages saturates at all of them).
    Shallow layers extract general features, so scopes that keep them frozen suit
    transfer (two-stage architectural fine-tuning, Table 1).
    """
    if scope not in SCOPES:
        raise InvalidConfig(f"unknown scope {scope!r}; valid scopes: {', '.join(SCOPES)}")
    n = len(structure.stages) if scope == "full" else min(SCOPES.index(scope) + 1, len(structure.stages))
    return tuple(b for stage in structure.stages[-n:] for b in stage)


def head_only(model: MappedNet) -> MappedNet:
    """Freeze everything before the classifier (pool and flatten included)."""
    return model.set_frozen_prefix(model.structure.sequence.index(model.structure.classifier))


@dataclass(frozen=True)
class ModelInfo:
    """A registered architecture: how to build it and which ImageNet weights fit it."""

    name: str
    family: str
    builder: Callable[..., MappedNet]
    imagenet_weights: str | None
    description: str
    # ImageNet weights that are not torchvision's (e.g. a method's released checkpoints):
    # a callable returning the state_dict from a local cache file, raising WeightsNotFound
    # with the expected path when absent. ``bench.models.pretrain.imagenet_state_dict`` uses it.
    imagenet_loader: Callable[[], dict[str, torch.Tensor]] | None = None


def model_info(name: str) -> ModelInfo:
    """The registered ``ModelInfo`` for ``name`` (``UnknownName`` lists the valid ones)."""
    return MODELS.get(name)


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching an fnmatch ``pattern``."""
    return MODELS.names(pattern)


def build_model(name: str, num_classes: int, width: float = 1.0, **kwargs: Any) -> MappedNet:
    """Build the registered model ``name`` with a fresh ``num_classes``-way classifier."""
    info = model_info(name)
    options = [p for p in inspect.signature(info.builder).parameters if p not in ("num_classes", "width")]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise InvalidConfig(
            f"{name} has no option(s) {', '.join(unknown)}; valid options: "
            f"num_classes, width{''.join(', ' + o for o in options)}"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise InvalidConfig(f"num_classes must be a positive integer, got {num_classes!r}")
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise InvalidConfig(f"width must be a number > 0, got {width!r}")
    return info.builder(num_classes=num_classes, width=float(width), **kwargs)


@functools.cache
def structure_of(name: str, width: float = 1.0) -> StructuralMap | None:
    """The block structure of model ``name``, built on the meta device: no weights, no memory.

    For checks at collection (a ``k`` larger than the model's blocks). A model that cannot be
    built on meta (the RegNets copy weights while building) is built on the CPU instead, once
    per name and width (about a second for RegNetY-16GF); None if that fails too, and the caller
    leaves the check to run time."""
    try:
        with torch.device("meta"):
            return build_model(name, num_classes=2, width=width).structure
    except (NotImplementedError, RuntimeError):
        pass
    try:
        with torch.no_grad():
            return build_model(name, num_classes=2, width=width).structure
    except (NotImplementedError, RuntimeError):
        return None


def build_from_arch_string(s: str) -> MappedNet:
    """Rebuild a model from ``MappedNet.arch_string()`` output, e.g. ``resnet18(num_classes=10,width=1.0)``."""
    usage = "expected name(key=value,...), e.g. 'resnet18(num_classes=10,width=0.25)'"
    try:
        call = ast.parse(s.strip(), mode="eval").body
        if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name) or call.args:
            raise ValueError("not a call with keyword arguments only")
        kwargs = {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords if kw.arg}
    except (SyntaxError, ValueError) as err:
        raise InvalidConfig(f"malformed architecture string {s!r} ({err}); {usage}") from None
    if "num_classes" not in kwargs:
        raise InvalidConfig(f"architecture string {s!r} lacks num_classes; {usage}")
    return build_model(call.func.id, **kwargs)
