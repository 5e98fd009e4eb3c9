"""Harness overhead: the same training steps through the engine and through a bare loop.

Both paths train the same model (same init, same data tensors on the device, same SGD
nesterov optimiser with the same decay groups, same cosine schedule). The harness path
is ``bench.engine.fit`` with a ``Recorder`` inside the runner's ``MemoryMeter`` (step
timers, loss kept on the device, divergence checks, curves, progress, FLOP count on the
first step); the bare path is a hand-written loop. One-off costs (first step, FLOP
counting, optimiser creation) cancel by timing N1 and N2 steps and taking the
difference, so the ratio is the per-step cost of the harness. Each repeat runs the
pair in ABBA order (bare, harness, harness, bare) so slow drift of a shared machine
cancels, and the median ratio over repeats is printed.

    python benchmarks/overhead.py                 # CPU, resnet18 width 0.25, 32 px
    python benchmarks/overhead.py --device cuda --width 1.0 --size 224 --batch 64
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bench import engine
from bench.contract.recorder import Recorder
from bench.contract.split import Split
from bench.measure import MemoryMeter, StepTimer
from bench.models.net import build_model


def make_split(n: int, size: int, device: torch.device) -> Split:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, size, size, generator=g).to(device)
    y = torch.randint(0, 10, (n,), generator=g).to(device)
    return Split("train", x, y, num_classes=10, input_size=size, flip_ok=False)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(
    model: torch.nn.Module,
    split: Split,
    cfg: engine.TrainConfig,
    steps: int,
    marks: list[int] | None = None,
    *,
    timer: StepTimer | None = None,
    compile_backend: str | None = None,
) -> float:
    """Seconds for ``steps`` optimisation steps of a hand-written loop.

    ``marks`` receives a timestamp at the start of every step's forward, the same point
    at which the harness path stamps (its ``before_step`` hook). ``timer`` (the harness's
    ``StepTimer``) times each step as the engine times its own, so a per-step median of both
    compares like with like. ``compile_backend`` wraps the model in ``torch.compile``, and
    ``cfg.optimizer_impl == "fused"`` on CUDA makes SGD fused: with ``cfg.bf16`` and
    ``cfg.channels_last`` that is the fast plain recipe (airbench's, timm's benchmark's).
    """
    device = split.device
    cuda = device.type == "cuda"
    params = [p for p in model.parameters() if p.requires_grad]
    fused = {"fused": True} if cuda and cfg.optimizer_impl == "fused" else {}
    opt = torch.optim.SGD(
        [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": cfg.weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
        ],
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=True,
        **fused,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: engine.lr_factor(s, steps, cfg))
    if cuda and cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = torch.compile(model, backend=compile_backend) if compile_backend else model
    gen = torch.Generator(device=device).manual_seed(0)
    n, bs = len(split), cfg.batch_size
    model.train()
    sync(device)
    t0 = time.perf_counter()
    perm, pos = torch.randperm(n, device=device, generator=gen), 0
    for _ in range(steps):
        if pos + bs > n:
            perm, pos = torch.randperm(n, device=device, generator=gen), 0
        x, y = split.x[perm[pos : pos + bs]], split.y[perm[pos : pos + bs]]
        pos += bs
        if cuda and cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if marks is not None:
            marks.append(time.perf_counter_ns())
        if timer is not None:
            timer.start()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda and cfg.bf16):
            loss = F.cross_entropy(forward(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if timer is not None:
            timer.stop()
    sync(device)
    return time.perf_counter() - t0


def harness_loop(
    model: torch.nn.Module, split: Split, cfg: engine.TrainConfig, steps: int, marks: list[int] | None = None
) -> float:
    """Seconds for ``steps`` steps through ``bench.engine.fit`` under the runner's measurement."""
    device = split.device
    cfg = engine.TrainConfig(**{**cfg.__dict__, "steps": steps})
    rec = Recorder(device, progress=lambda _msg: None)
    hooks = engine.StepHooks(
        before_step=(lambda _s: marks.append(time.perf_counter_ns())) if marks is not None else None
    )
    sync(device)
    t0 = time.perf_counter()
    with MemoryMeter(device):
        engine.fit(model, split, cfg, rec, hooks=hooks)
    rec.finalize()
    sync(device)
    return time.perf_counter() - t0


def iteration_ms(marks: list[int], steps: int, skip: int) -> list[float]:
    """Per-iteration times from per-step timestamps of consecutive runs of ``steps`` steps."""
    out = []
    for start in range(0, len(marks), steps):
        run = marks[start : start + steps]
        out.extend((b - a) / 1e6 for a, b in zip(run[skip:], run[skip + 1 :]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, nargs=2, default=(10, 60), metavar=("N1", "N2"))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 limits CPU scheduling noise; 0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    split = make_split(max(args.batch * 8, 512), args.size, device)
    cfg = engine.TrainConfig(batch_size=args.batch, lr=0.01, log_every=50)
    torch.manual_seed(0)
    init = build_model(args.model, num_classes=10, width=args.width).state_dict()

    def fresh() -> torch.nn.Module:
        model = build_model(args.model, num_classes=10, width=args.width)
        model.load_state_dict(init)
        return model.to(device)

    n1, n2 = args.steps
    if device.type == "cpu":
        marks_b: list[int] = []
        marks_h: list[int] = []
        for _ in range(max(1, args.repeats // 2)):
            bare_loop(fresh(), split, cfg, n2, marks_b)
            harness_loop(fresh(), split, cfg, n2, marks_h)
        it_b = statistics.median(iteration_ms(marks_b, n2, skip=5))
        it_h = statistics.median(iteration_ms(marks_h, n2, skip=5))
        print(
            f"per-iteration median (start of one step to the next, data fetch and bookkeeping included): "
            f"bare {it_b:.3f} ms, harness {it_h:.3f} ms, ratio {it_h / it_b:.4f}",
            flush=True,
        )
    bare_ms, harness_ms, ratios = [], [], []

    def per_step_ms(loop) -> float:
        return (loop(fresh(), split, cfg, n2) - loop(fresh(), split, cfg, n1)) / (n2 - n1) * 1e3

    for rep in range(args.repeats):
        b1, h1, h2, b2 = (
            per_step_ms(bare_loop),
            per_step_ms(harness_loop),
            per_step_ms(harness_loop),
            per_step_ms(bare_loop),
        )
        b, h = (b1 + b2) / 2, (h1 + h2) / 2
        bare_ms.append(b)
        harness_ms.append(h)
        ratios.append(h / b)
        print(f"repeat {rep}: bare {b:.3f} ms/step, harness {h:.3f} ms/step, ratio {h / b:.4f}", flush=True)
    ratio = statistics.median(ratios)
    print(
        f"\n{args.model} width {args.width:g}, {args.size} px, batch {args.batch}, {device}, "
        f"{torch.get_num_threads()} threads, steps {n2 - n1} per measurement, {args.repeats} repeats"
    )
    print(f"bare    median {statistics.median(bare_ms):.3f} ms/step")
    print(f"harness median {statistics.median(harness_ms):.3f} ms/step")
    print(
        f"overhead ratio harness/bare: median {ratio:.4f} ({(ratio - 1) * 100:+.2f}%), "
        f"min {min(ratios):.4f}, max {max(ratios):.4f}  (target <= 1.03)"
    )


if __name__ == "__main__":
    main()
