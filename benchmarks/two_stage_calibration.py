"""Calibrate the two-stage search's stopping rules on a synthetic reward with a known best architecture.

    python benchmarks/two_stage_calibration.py                       # paper settings, 4/8/12/16 decisions, 20 seeds
    python benchmarks/two_stage_calibration.py --schedule smoke      # the smoke suite's controller
    python benchmarks/two_stage_calibration.py --gap 0.005 --json out.json

The harness's own ``Controller``, ``EnasReinforce`` and ``EarlyStop`` (``methods.two_stage.controller``)
run one search per seed against a simulated supernet instead of a trained one. Each seed draws a
best architecture; a subnet's expected accuracy at controller round ``u`` is

    acc(A, u) = final - rise * exp(-u / tau) - gap * (number of choices where A differs from the best)

(the supernet keeps training, so the reward is non-stationary and converges with time constant
``tau``), and its reward is the accuracy on one batch: ``Binomial(reward_batch, acc) / reward_batch``,
the noise of scoring a subnet on ``reward_batch`` held-out images. A round is what the method runs
after every supernet epoch: ``train_steps`` REINFORCE steps of ``samples`` subnets each, then both
rules are fed the greedy architecture, its choice probabilities and the round's mean reward.

Per decision count the table prints: how often the action rule fired and at which round (median,
min-max), how often the architecture it fired on is the best one, how often the reward rule fired
and when, and in how many runs the action rule fired no later than the reward rule (a run where
the action rule never fired counts against it). A run stops when both rules fired or at
``--rounds`` (Table 2: 1e5 iterations / 391 per epoch = 256 rounds).

Schedules (the controller's lr, Adam steps per round, samples per step):

- ``paper``: lr 3.5e-4 (Table 2) with ENAS's controller schedule, 50 steps x 20 samples per round
  (the paper's lr is ENAS's; it gives no schedule). The method's defaults.
- ``single``: lr 3.5e-4, one step of 10 samples per round: the harness before this calibration.
- ``smoke``: the smoke suite's controller (``suites/test_two_stage.py``), 15 rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from methods.two_stage.controller import ActionStop, Controller, EarlyStop, EnasReinforce, RewardStop  # noqa: E402


@dataclass(frozen=True)
class Schedule:
    lr: float
    train_steps: int
    samples: int
    rounds: int
    hidden: int = 64
    window: int = 10
    threshold: float = 0.95
    reward_window: int = 10
    reward_tol: float = 0.01


SCHEDULES = {
    "paper": Schedule(lr=3.5e-4, train_steps=50, samples=20, rounds=256),
    "single": Schedule(lr=3.5e-4, train_steps=1, samples=10, rounds=256),
    # Keep in step with SMOKE_TWO_STAGE in suites/test_two_stage.py.
    "smoke": Schedule(
        lr=0.02,
        train_steps=5,
        samples=4,
        rounds=15,
        hidden=16,
        window=3,
        threshold=0.9,
        reward_window=5,
        reward_tol=0.03,
    ),
}


@dataclass
class Outcome:
    action: int | None
    correct: bool | None
    reward: int | None
    rounds: int


def simulate(layers: int, seed: int, s: Schedule, args: argparse.Namespace) -> Outcome:
    """One search against the synthetic reward; where each rule fired and whether it chose the best."""
    with torch.random.fork_rng(devices=[]):  # the controller's initialisation, without touching the caller's RNG
        torch.manual_seed(seed)
        return _simulate(layers, seed, s, args)


def _simulate(layers: int, seed: int, s: Schedule, args: argparse.Namespace) -> Outcome:
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    best = torch.as_tensor(rng.integers(0, 2, layers))
    controller = Controller(layers, s.hidden)
    policy = EnasReinforce(controller, lr=s.lr, discount=args.discount)
    stop = EarlyStop(ActionStop(s.window, s.threshold), RewardStop(s.reward_window, s.reward_tol))
    for u in range(1, s.rounds + 1):
        base = args.final - args.rise * np.exp(-u / args.tau)
        means = []
        for _ in range(s.train_steps):
            rollout = controller.rollout(s.samples, generator=gen)
            wrong = (rollout.actions != best).sum(1).numpy()
            acc = np.clip(base - args.gap * wrong, 0.0, 1.0)
            reward = torch.as_tensor(rng.binomial(args.reward_batch, acc) / args.reward_batch, dtype=torch.float32)
            policy.step(rollout.log_probs, rollout.entropies, reward)
            means.append(float(reward.mean()))
        arch, path = controller.greedy_path()
        stop.update(u, arch, path, float(np.mean(means)))
        if stop.action_stop is not None and stop.reward_stop is not None:
            break
    arch = stop.action_stop_arch
    return Outcome(stop.action_stop, None if arch is None else arch == best.tolist(), stop.reward_stop, u)


def summarise(layers: int, runs: list[Outcome]) -> dict:
    n = len(runs)
    acted = [r for r in runs if r.action is not None]
    rewarded = [r for r in runs if r.reward is not None]
    first = [r for r in runs if r.action is not None and (r.reward is None or r.action <= r.reward)]

    def spread(values: list[int]) -> str:
        return f"{statistics.median(values):g} ({min(values)}-{max(values)})" if values else "-"

    return {
        "decisions": layers,
        "runs": n,
        "action_fired_frac": len(acted) / n,
        "action_round": spread([r.action for r in acted]),  # type: ignore[misc]
        "action_best_frac": (sum(bool(r.correct) for r in acted) / len(acted)) if acted else None,
        "reward_fired_frac": len(rewarded) / n,
        "reward_round": spread([r.reward for r in rewarded]),  # type: ignore[misc]
        "action_not_later_frac": len(first) / n,
    }


def table(rows: list[dict]) -> str:
    head = (
        "| decisions | runs | action fired | action round | best at action stop "
        "| reward fired | reward round | action <= reward |"
    )
    lines = [head, "|" + "---|" * 8]
    for r in rows:
        best = "-" if r["action_best_frac"] is None else f"{r['action_best_frac']:.0%}"
        lines.append(
            f"| {r['decisions']} | {r['runs']} | {r['action_fired_frac']:.0%} | {r['action_round']} | {best} | "
            f"{r['reward_fired_frac']:.0%} | {r['reward_round']} | {r['action_not_later_frac']:.0%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--schedule", choices=sorted(SCHEDULES), default="paper")
    parser.add_argument("--decisions", type=int, nargs="+", default=[4, 8, 12, 16], help="Table 1 scope sizes (R18)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--gap", type=float, default=0.005, help="accuracy lost per wrong choice (fraction)")
    parser.add_argument("--reward-batch", type=int, default=64, help="images per reward (the batch noise)")
    parser.add_argument("--final", type=float, default=0.85, help="converged accuracy of the best subnet")
    parser.add_argument("--rise", type=float, default=0.2, help="how much the supernet still gains from round 0")
    parser.add_argument("--tau", type=float, default=30.0, help="rounds for the supernet's gain to fall by e")
    parser.add_argument("--discount", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=0, help="override the schedule's round budget")
    parser.add_argument("--lr", type=float, default=0.0, help="override the schedule's controller lr")
    parser.add_argument("--train-steps", type=int, default=0, help="override the schedule's Adam steps per round")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    s = SCHEDULES[args.schedule]
    overrides = {"rounds": args.rounds, "lr": args.lr, "train_steps": args.train_steps}
    s = Schedule(**{**s.__dict__, **{k: v for k, v in overrides.items() if v}})
    print(
        f"schedule {args.schedule}: lr {s.lr:g}, {s.train_steps} steps x {s.samples} samples per round, "
        f"{s.rounds} rounds; gap {args.gap:g} per choice, reward batch {args.reward_batch}, "
        f"rise {args.rise:g} over tau {args.tau:g} rounds; action rule window {s.window} threshold {s.threshold:g}; "
        f"reward rule window {s.reward_window} tol {s.reward_tol:g}",
        flush=True,
    )
    rows = []
    for layers in args.decisions:
        t0 = time.perf_counter()
        runs = [simulate(layers, seed, s, args) for seed in range(args.seeds)]
        rows.append(summarise(layers, runs) | {"wall_s": round(time.perf_counter() - t0, 1)})
        print(f"  {layers} decisions: {rows[-1]}", flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(
            json.dumps({"schedule": args.schedule, "settings": vars(args) | {"json": None}, "rows": rows}, indent=2)
        )
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)  # one simulation per core: run several with --decisions split across shells
    raise SystemExit(main())
