"""The engine's speed options (``TrainConfig.compile``, ``TrainConfig.optimizer_impl``): each
trains the same trajectory as the plain path, records what it did, and is refused when misspelt.

Compilation tests run dynamo with the ``aot_eager`` backend (the same graph capture, AOT
autograd and guards as inductor, without generating C++): inductor's cold compile of resnet20 is
about 90 s on 2 CPU cores. ``test_inductor_compile_matches_eager`` runs the real default backend
on a tiny net where a C compiler exists. The ``gpu`` test checks the CUDA choice of ``"auto"``.
"""

import dataclasses
import functools
import shutil

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from torch import nn

from bench import engine
from bench.contract.config import make_config
from bench.contract.recorder import Recorder
from bench.contract.split import Split
from bench.errors import InvalidConfig
from bench.models.net import build_model

BASE = engine.TrainConfig(steps=6, batch_size=16, lr=0.05, log_every=1)


def _noise(n: int = 64, size: int = 16, classes: int = 10) -> Split:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=gen)
    return Split("noise", x, torch.randint(0, classes, (n,), generator=gen), classes, size)


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet20", num_classes=10, width=0.25)


def _tiny() -> nn.Module:
    """A conv net that compiles in seconds (dynamo's trace of resnet20 alone takes ~10 s here)."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers, nn.Linear(8, 10))


def _train(cfg: engine.TrainConfig, model: nn.Module | None = None, **kw) -> tuple[list[float], Recorder, nn.Module]:
    """The per-step loss of ``fit`` (``log_every=1``), its recorder and the trained model."""
    model = model if model is not None else _resnet()
    rec = Recorder("cpu", timing_warmup=0)
    engine.fit(model, _noise(), cfg, rec, seed=0, **kw)
    return [v for _, v in rec.series["train_loss_nat"]], rec, model


def _gap(a: list[float], b: list[float]) -> float:
    assert len(a) == len(b) > 0
    return max(abs(x - y) for x, y in zip(a, b))


@functools.cache
def _plain(optimizer: str = "sgd") -> tuple[float, ...]:
    return tuple(_train(dataclasses.replace(BASE, optimizer=optimizer))[0])


@pytest.fixture
def aot_eager(monkeypatch):
    """``torch.compile`` with the ``aot_eager`` backend, on a fresh dynamo cache."""
    real = torch.compile
    monkeypatch.setattr(torch, "compile", functools.partial(real, backend="aot_eager"))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# -- torch.compile --------------------------------------------------------------------------------


def test_compile_matches_eager_and_records_its_warmup(aot_eager):
    plain = list(_plain())
    compiled, rec, model = _train(dataclasses.replace(BASE, compile=True))
    gap = _gap(plain, compiled)
    print(f"compile (aot_eager) vs eager: max |loss gap| {gap:.3g} nat over {BASE.steps} steps")
    assert gap < 1e-4, (plain, compiled)
    m = rec.finalize()
    assert m["train_compile_s"] > 0 and m["train_compile_recompiles_count"] == 0
    # Step 0 counts FLOPs and memory eagerly (timed; the recorder's warm-up is 0 here), step 1
    # compiles (untimed), the rest are timed.
    assert m["train_timed_steps"] == BASE.steps - 1
    assert m["train_step_gflop"] > 0 and m["train_counted_mem_mib"] > 0
    assert list(model.state_dict()) == list(_resnet().state_dict())  # no "_orig_mod." prefix
    assert rec.info["optimizer_impl"] == "loop"


def test_compile_passes_the_compiled_module_to_loss_fn(aot_eager):
    seen = []

    def loss_fn(module, x, y):
        seen.append(module)
        return F.cross_entropy(module(x), y, label_smoothing=0.1)

    hooks = engine.StepHooks(loss_fn=loss_fn)
    plain, _, _ = _train(BASE, _tiny(), hooks=hooks)
    seen.clear()
    compiled, rec, model = _train(dataclasses.replace(BASE, compile=True), _tiny(), hooks=hooks)
    gap = _gap(plain, compiled)
    print(f"compile with loss_fn vs eager: max |loss gap| {gap:.3g} nat")
    assert gap < 1e-4, (plain, compiled)
    assert seen[0] is model  # the counting step runs the eager module
    assert all(m is not model and m._orig_mod is model for m in seen[1:]), seen
    assert rec.metrics["train_compile_recompiles_count"] == 0


def test_a_recompile_after_the_compile_step_is_counted(aot_eager):
    """BatchNorm put in eval mode at step 4 fails the compiled graph's guard: one recompile."""
    model = _tiny()
    hooks = engine.StepHooks(before_step=lambda step: model[1].eval() if step == 4 else None)
    _, rec, _ = _train(dataclasses.replace(BASE, compile=True), model, hooks=hooks)
    assert rec.metrics["train_compile_recompiles_count"] == 1


def test_time_steps_leaves_the_compile_step_untimed(aot_eager):
    cfg = engine.TrainConfig(steps=1, compile=True)
    kw = dict(batch_size=4, image_size=16, num_classes=10, device="cpu", steps=3, warmup=1)
    timing = engine.time_steps(_tiny(), cfg, **kw)
    assert len(timing.times_ms) == 3 and timing.compile_s > 0 and timing.recompiles_count == 0
    assert timing.counted_mem_mib > timing.saved_act_mib > 0
    plain = engine.time_steps(_tiny(), engine.TrainConfig(steps=1), **kw)
    assert len(plain.times_ms) == 3 and plain.compile_s != plain.compile_s  # NaN: nothing compiled


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="inductor needs a C compiler")
def test_inductor_compile_matches_eager():
    """The real default backend (C++ kernels on CPU), on a net small enough to compile in
    seconds (about 20 s with a cold inductor cache on 2 cores, 3 s warm)."""
    torch._dynamo.reset()
    plain, _, _ = _train(BASE, _tiny())
    compiled, rec, _ = _train(dataclasses.replace(BASE, compile=True), _tiny())
    gap = _gap(plain, compiled)
    print(f"compile (inductor) vs eager: max |loss gap| {gap:.3g} nat over {BASE.steps} steps")
    assert gap < 1e-4, (plain, compiled)
    assert rec.metrics["train_compile_s"] > 0 and rec.metrics["train_compile_recompiles_count"] == 0


# -- optimiser implementation ---------------------------------------------------------------------


def _fused_on_cpu(optimizer: str) -> bool:
    cls = torch.optim.SGD if optimizer == "sgd" else torch.optim.AdamW
    p = nn.Parameter(torch.zeros(2))
    p.grad = torch.ones(2)
    try:
        cls([p], lr=0.1, fused=True).step()
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def test_auto_on_cpu_passes_torch_nothing():
    """Today's optimiser exactly: no implementation keyword, so torch runs its CPU default."""
    for optimizer in ("sgd", "adamw"):
        opt = engine.make_optimizer(nn.Linear(3, 2).parameters(), engine.TrainConfig(optimizer=optimizer))
        assert opt.defaults["foreach"] is None and opt.defaults["fused"] is None


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("impl", ["loop", "foreach", "fused"])
def test_optimizer_impl_matches_the_default(impl, optimizer):
    if impl == "fused" and not _fused_on_cpu(optimizer):
        pytest.skip(f"this torch has no fused {optimizer} on CPU")
    plain = list(_plain(optimizer))
    other, rec, _ = _train(dataclasses.replace(BASE, optimizer=optimizer, optimizer_impl=impl))
    gap = _gap(plain, other)
    print(f"{optimizer} {impl} vs default: max |loss gap| {gap:.3g} nat over {BASE.steps} steps")
    assert gap < 1e-5, (plain, other)
    if impl == "loop":
        assert other == plain  # the CPU default is the loop: the same arithmetic, bit for bit
    assert rec.info["optimizer_impl"] == impl


# -- validation -----------------------------------------------------------------------------------


def test_bad_speed_options_are_refused_naming_the_valid_ones():
    with pytest.raises(InvalidConfig, match="optimizer_impl must be one of auto, fused, foreach, loop, got 'fast'"):
        engine.TrainConfig(optimizer_impl="fast")
    with pytest.raises(InvalidConfig, match="'fast' is not one of 'auto', 'fused', 'foreach', 'loop'"):
        make_config(engine.TrainConfig, {"optimizer_impl": "fast"})
    with pytest.raises(InvalidConfig, match="compile must be True or False, got 'yes'"):
        engine.TrainConfig(compile="yes")
    assert engine.TrainConfig().compile is False and engine.TrainConfig().optimizer_impl == "auto"


# -- CUDA -----------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_auto_picks_fused_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    model = _resnet().cuda()
    for optimizer in ("sgd", "adamw"):
        opt = engine.make_optimizer(model.parameters(), engine.TrainConfig(optimizer=optimizer))
        assert opt.defaults["fused"] is True, optimizer
        loop = engine.make_optimizer(model.parameters(), engine.TrainConfig(optimizer=optimizer, optimizer_impl="loop"))
        assert loop.defaults["foreach"] is False and not loop.defaults["fused"]
    split = _noise()
    split = Split("noise", split.x.cuda(), split.y.cuda(), split.num_classes, split.input_size)
    rec = Recorder("cuda", timing_warmup=0)
    engine.fit(model, split, dataclasses.replace(BASE, steps=3), rec)
    assert rec.info["optimizer_impl"] == "fused"
