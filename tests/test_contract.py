"""Contract of every registered method, on a tiny CPU task.

- ``evaluate`` returns the required keys with values in range;
- the ``trainable_params`` the engine reports equals the parameters that require grad;
- tensors that did not train (parameters with requires_grad False and the buffers of the
  frozen prefix) are bit-identical to the source weights after ``fit``;
- parameters that trained (and share a name and shape with the source) moved away from
  the source weights.
"""

import math

import pytest
import torch

from bench.contract.interface import EVAL_KEYS, Fitted, Method
from bench.contract.recorder import Recorder
from bench.execute.runner import build_task, resolve, seed_everything
from bench.models.pretrain import pretrained_source
from bench.registry import METHODS
from tests.conftest import TINY_CONFIGS, tiny_spec


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_has_a_tiny_config(name):
    cls = METHODS.get(name)
    assert name in TINY_CONFIGS or "train" in cls.Config.__dataclass_fields__, (
        f"{name}: add a tiny config to TINY_CONFIGS in tests/conftest.py so contract tests stay fast"
    )


def _source_state(task):
    s = task.settings
    state, _ = pretrained_source(task.model, s.width, s.source, s.input_size, s.pretrain, s.source_seed, task.device)
    return state


@pytest.mark.parametrize("name", METHODS.names())
def test_method_contract(name):
    spec = tiny_spec(name, model="resnet18")
    cls, config, settings = resolve(spec)
    method = cls(config)
    assert isinstance(method, Method) and method.name == name
    seed_everything(0)
    task = build_task(spec, settings, torch.device("cpu"))
    rec = Recorder("cpu")
    fitted = method.fit(task, rec)
    assert isinstance(fitted, Fitted) and fitted.arch
    for split in (task.val, task.test):
        scores = method.evaluate(fitted, split)
        assert set(EVAL_KEYS) <= set(scores)
        assert 0.0 <= scores["top1_pct"] <= 100.0 and math.isfinite(scores["loss_nat"]) and scores["loss_nat"] >= 0
    model = fitted.model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert rec.metrics["trainable_params"] == trainable
    source = _source_state(task)
    params = dict(model.named_parameters())
    frozen = [n for n, p in params.items() if not p.requires_grad]
    prefix = getattr(model, "frozen_prefix", 0)
    frozen_modules = [n for n, _ in model.parts()[:prefix]] if prefix else []
    frozen_buffers = [n for n, _ in model.named_buffers() if any(n.startswith(m + ".") for m in frozen_modules)]
    state = model.state_dict()
    for key in frozen + frozen_buffers:
        assert torch.equal(state[key].cpu(), source[key]), f"{name}: frozen tensor {key} changed"
    moved = [
        n
        for n, p in params.items()
        if p.requires_grad and n in source and p.shape == source[n].shape and not n.startswith("fc.")
    ]
    assert all(not torch.equal(state[n].cpu(), source[n]) for n in moved), f"{name}: a trainable tensor did not move"
