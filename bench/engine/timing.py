"""Step times of the engine's own training step: ``time_steps`` and the speed mode it runs in.

A planner (NASOA's schedule generator, a step-time table) must time the step the training will
run, not a loop of its own: ``time_steps`` calls ``bench.engine.train.TrainStep``, the step
``fit`` calls, with the same optimiser, precision, memory format and frozen state.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from bench.cache import isolated_rng
from bench.contract.settings import TrainConfig
from bench.engine.train import StepHooks, TrainStep, trained_params
from bench.measure import MIB, StepTimer, percentiles_ms


@dataclass(frozen=True)
class StepTiming:
    """What ``time_steps`` measured: the timed steps' ms (warm-up dropped) and the counted memory.

    With ``cfg.compile``, ``compile_s`` is the wall seconds of the (untimed) compile step and
    ``recompiles_count`` the frames compiled after it (a timed step that recompiled); NaN and 0
    without compilation (and ``recompiles_count`` 0 where torch keeps no count)."""

    times_ms: tuple[float, ...]
    counted_mem_mib: float
    saved_act_mib: float
    compile_s: float = float("nan")
    recompiles_count: int = 0

    @property
    def median_ms(self) -> float:
        return percentiles_ms(list(self.times_ms))["median"]

    @property
    def p10_ms(self) -> float:
        return percentiles_ms(list(self.times_ms))["p10"]

    @property
    def p90_ms(self) -> float:
        return percentiles_ms(list(self.times_ms))["p90"]


@contextlib.contextmanager
def speed_mode() -> Iterator[None]:
    """Speed mode for a block: cuDNN autotune on, cuDNN determinism and deterministic algorithms
    off (the flags ``bench.execute.runner.apply_mode("speed")`` sets for a whole cell); the
    caller's flags come back afterwards, also on error. What a step-time figure is measured in."""
    flags = (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = True, False
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = flags[0], flags[1]
        torch.use_deterministic_algorithms(flags[2], warn_only=flags[3])


def time_steps(
    model: nn.Module,
    cfg: TrainConfig,
    *,
    batch_size: int,
    image_size: int,
    num_classes: int,
    device: torch.device | str,
    steps: int = 10,
    warmup: int = 3,
    params: Sequence[nn.Parameter] | None = None,
    seed: int = 0,
) -> StepTiming:
    """Time ``steps`` training steps of ``model`` exactly as ``fit`` runs them, on synthetic data.

    The step is ``fit``'s own (``TrainStep``): ``make_optimizer(params, cfg)`` with its decay
    groups and nesterov, the lr schedule, bf16 autocast and channels_last on CUDA when ``cfg``
    asks, clipping, and only ``params`` (default: those that require grad, i.e. the frozen
    state the training will use). The batch is ``batch_size`` x 3 x ``image_size``^2 normal
    noise with random labels below ``num_classes``, drawn from ``seed``. Steps are timed by
    ``bench.measure.StepTimer`` (CUDA events, one synchronise) after ``warmup`` untimed ones, in
    speed mode (cuDNN autotune on, deterministic algorithms off; the caller's flags are restored
    afterwards, also on error). The first warm-up step also counts the training memory as
    ``fit`` does (``counted_mem_mib``, ``saved_act_mib``; NaN with ``warmup=0``). With
    ``cfg.compile`` one more untimed step runs first among the compiled ones, the compile step
    (``TrainStep.compile_step``): ``steps`` timed steps follow ``warmup`` untimed ones all the same.

    It trains: the model's weights, BatchNorm statistics and memory format change, so pass a
    throwaway copy. The caller's random streams are left as they were (``isolated_rng``). The
    model's train/eval mode is restored.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"time_steps needs steps >= 1 and warmup >= 0, got steps={steps}, warmup={warmup}")
    device = torch.device(device)
    trained = trained_params(model, params, "time_steps")
    was_training = model.training
    counted = saved_mib = float("nan")
    with isolated_rng(), speed_mode():
        gen = torch.Generator().manual_seed(seed)
        x = torch.randn(batch_size, 3, image_size, image_size, generator=gen).to(device)
        y = torch.randint(0, num_classes, (batch_size,), generator=gen).to(device)
        total = warmup + steps + int(cfg.compile)
        train_step = TrainStep(model, trained, cfg, device, total, StepHooks())
        x = train_step.layout(x)
        timer = StepTimer(device, warmup=warmup)
        try:
            for step in range(total):
                saved = train_step.saved_bytes() if step == 0 and warmup else None
                if train_step.compiles_next(saved is not None):
                    train_step.compile_step(step, x, y)
                    continue
                timer.start()
                train_step(step, x, y, saved)
                timer.stop()
                if saved is not None:
                    counted, saved_mib = train_step.counted_bytes(saved) / MIB, saved.nbytes / MIB
        finally:
            model.train(was_training)
        times = timer.times_ms()
    compile_s = train_step.compile_s if train_step.warmed else float("nan")
    return StepTiming(tuple(times), counted, saved_mib, compile_s, train_step.recompiles() or 0)
