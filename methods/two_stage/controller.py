"""The subnet-sampling controller and the two stopping rules of the search.

``Controller`` (paper Eq. 1-3, Fig. 1): *stacked* LSTM cells (``lstm_layers``, 2 by default)
fed an embedding of the previous action (a start token first), with one softmax head per
mutable layer in network order. Actions are sampled during the search; the final
architecture is the greedy (argmax) rollout.

``EnasReinforce`` (Eq. 4-5): REINFORCE on the sampled subnets' rewards with the return of
step ``t`` discounted from the terminal reward, ``G_t = gamma^(T-t) R`` (``discounted_weights``;
the paper writes the discount but gives no value, so ``discount`` is a setting, 1.0 by default
as in the ENAS code), an exponential moving-average baseline and Adam.

The stopping rules, fed once per controller round (one round after every supernet epoch):

``ActionStop`` (the paper's rule, made precise): let ``A*`` be the greedy architecture and
``q_k = pi(A*_k | A*_<k)`` the controller's exact probability of each of its choices (no
sampling noise: computed from the policy, not from rollouts). The rule fires at the first
round where ``A*`` has been the same for ``window`` consecutive rounds **and**
``min_k q_k >= threshold``: the action set is stable and every choice is decided.

``RewardStop`` (the comparator, reward convergence that knows the reward is noisy): the
per-round mean reward is a noisy series (each reward is one batch's accuracy). Over the last
``window`` rounds an ordinary least-squares line is fitted; the reward has *converged* at the
first round where the one-sided ``confidence`` upper bound of its rise over the window,
``(slope + t_{confidence, window-2} * se(slope)) * (window - 1)``, is at most ``tol``: with
that confidence the reward rose by less than ``tol`` over the window. A plateau test on raw
window means (the rule this replaces) fires on noise alone the first time two windows' means
happen to agree; this one cannot fire while the noise hides a rise larger than ``tol``.

``benchmarks/two_stage_calibration.py`` simulates the controller at the paper's settings on a
synthetic reward with a known best architecture and shows how often and when each rule fires.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from scipy import stats
from torch import nn


class Rollout(NamedTuple):
    """``n`` sampled architectures: actions ``[n, L]``, per-step log-probabilities and entropies ``[n, L]``."""

    actions: torch.Tensor
    log_probs: torch.Tensor
    entropies: torch.Tensor


class Controller(nn.Module):
    """Stacked-LSTM policy over ``num_layers`` binary choices (0: 3x3, 1: 5x5)."""

    def __init__(self, num_layers: int, hidden: int = 64, tanh_c: float = 0.0, lstm_layers: int = 2) -> None:
        super().__init__()
        if num_layers < 1 or hidden < 1 or lstm_layers < 1:
            raise ValueError(
                f"num_layers, hidden and lstm_layers must be >= 1, got {num_layers}, {hidden}, {lstm_layers}"
            )
        self.num_layers, self.hidden, self.tanh_c = num_layers, hidden, tanh_c
        self.embed = nn.Embedding(3, hidden)  # 0, 1: previous action; 2: start token
        self.lstm = nn.LSTM(hidden, hidden, num_layers=lstm_layers)  # stacked cells, one step at a time
        self.heads = nn.ModuleList(nn.Linear(hidden, 2) for _ in range(num_layers))
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)
        for head in self.heads:
            nn.init.zeros_(head.bias)

    def _head(self, k: int, out: torch.Tensor) -> torch.Tensor:
        logits = self.heads[k](out)
        return self.tanh_c * torch.tanh(logits) if self.tanh_c else logits

    @torch.no_grad()
    def _decode(self, n: int, uniforms: torch.Tensor | None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Choose step by step (each choice feeds the next): sampled with ``uniforms`` ``[n, L]``
        (5x5 when ``u < P(5x5)``), greedy without. Actions ``[n, L]`` and each step's probabilities."""
        device = self.embed.weight.device
        inp = torch.full((n,), 2, dtype=torch.long, device=device)
        layers = [
            [getattr(self.lstm, f"{w}_l{i}") for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            for i in range(self.lstm.num_layers)
        ]
        state = [(torch.zeros(n, self.hidden, device=device),) * 2 for _ in layers]
        actions, probs = [], []
        for k in range(self.num_layers):
            x = self.embed(inp)
            for i, weights in enumerate(layers):  # the stacked cells, one step (what nn.LSTM computes)
                state[i] = torch.lstm_cell(x, state[i], *weights)
                x = state[i][0]
            p = self._head(k, x).softmax(-1)
            inp = p.argmax(-1) if uniforms is None else (uniforms[:, k] < p[:, 1]).long()
            actions.append(inp)
            probs.append(p)
        return torch.stack(actions, 1), probs

    def evaluate(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step log-probabilities and entropies ``[n, L]`` of given architectures ``[n, L]``.

        Teacher-forced: the inputs (start token, then each previous action) are known, so the
        stacked LSTM runs over the whole sequence in one call, with gradients."""
        n = actions.shape[0]
        start = torch.full((n, 1), 2, dtype=torch.long, device=actions.device)
        out, _ = self.lstm(self.embed(torch.cat([start, actions[:, :-1]], 1)).transpose(0, 1))
        log_p = torch.stack([torch.log_softmax(self._head(k, out[k]), -1) for k in range(self.num_layers)], 1)
        return log_p.gather(2, actions.unsqueeze(2)).squeeze(2), -(log_p.exp() * log_p).sum(2)

    def rollout(self, n: int, *, generator: torch.Generator | None = None) -> Rollout:
        """``n`` sampled architectures with their per-step log-probabilities and entropies (with gradients)."""
        device = self.embed.weight.device
        uniforms = torch.rand(n, self.num_layers, generator=generator).to(device)
        actions, _ = self._decode(n, uniforms)
        log_probs, entropies = self.evaluate(actions)
        return Rollout(actions, log_probs, entropies)

    @torch.no_grad()
    def greedy_path(self) -> tuple[list[int], list[float]]:
        """The greedy architecture ``A*`` and the exact ``pi(A*_k | A*_<k)`` of each of its choices."""
        actions, probs = self._decode(1, None)
        return actions[0].tolist(), [float(p[0, a]) for p, a in zip(probs, actions[0])]

    @torch.no_grad()
    def estimate_probs(self, rollouts: int, generator: torch.Generator | None = None) -> np.ndarray:
        """Marginal P(a_k = 1) for every layer, estimated from ``rollouts`` samples (the Fig. 4 heatmap)."""
        uniforms = torch.rand(rollouts, self.num_layers, generator=generator).to(self.embed.weight.device)
        return self._decode(rollouts, uniforms)[0].float().mean(0).cpu().numpy()

    def argmax(self) -> list[int]:
        """The greedy architecture."""
        return self.greedy_path()[0]


def discounted_weights(num_steps: int, discount: float) -> torch.Tensor:
    """``gamma^(T-t)`` for ``t = 1..T``: the return of step ``t`` per unit of terminal reward (Eq. 4).

    The reward arrives once, after the last choice, so ``G_t = sum_{j>=t} gamma^(j-t) r_j =
    gamma^(T-t) R``: the last choice gets the whole reward, the first ``gamma^(T-1)`` of it.
    """
    return torch.tensor([discount ** (num_steps - t) for t in range(1, num_steps + 1)])


@dataclass
class EnasReinforce:
    """REINFORCE for the two-stage controller, in the ENAS style (Pham et al. 2018), with Eq. 4-5's discount.

    Per Adam step, with rewards ``r_i`` of the sampled subnets, per-step log-probabilities
    ``log p_it`` and entropies ``H_it``:

    - the entropy is a bonus **in the reward**: ``R_i = r_i + entropy_weight * sum_t H_it``
      (detached, so it shapes the advantage but is not differentiated);
    - the advantage of step ``t`` uses the baseline **before** this step:
      ``A_it = gamma^(T-t) (R_i - b)`` (the discounted return minus the discounted baseline;
      ``b`` starts at the first batch's mean ``R``);
    - loss ``-mean_i sum_t A_it * log p_it``, one Adam step;
    - **then** the baseline moves toward this batch: ``b <- b - (1 - decay) * (b - mean(R))``.

    It differs from ``methods.proxyless.nat.NatReinforce`` (entropy as a differentiated loss term,
    baseline updated before the advantage): the two learners come from different papers and each
    keeps its own update, so they are two classes, not one with flags.
    """

    controller: Controller
    lr: float = 3.5e-4
    entropy_weight: float = 1e-4
    baseline_decay: float = 0.99
    discount: float = 1.0
    baseline: float | None = None
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=self.lr)

    def step(self, log_probs: torch.Tensor, entropies: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        """One policy-gradient step from a batch of sampled subnets (``[n, T]`` log-probs/entropies) and rewards."""
        shaped = rewards + self.entropy_weight * entropies.detach().sum(1)
        mean = float(shaped.mean())
        if self.baseline is None:
            self.baseline = mean
        weights = discounted_weights(log_probs.shape[1], self.discount).to(log_probs)
        advantage = (shaped - self.baseline).detach().to(log_probs)
        loss = -(advantage[:, None] * weights[None, :] * log_probs).sum(1).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.baseline -= (1.0 - self.baseline_decay) * (self.baseline - mean)
        return {
            "reward": float(rewards.mean()),
            "baseline": self.baseline,
            "entropy": float(entropies.detach().sum(1).mean()),
        }


@dataclass
class ActionStop:
    """Fires when the greedy architecture is unchanged for ``window`` rounds and every choice is decided."""

    window: int = 10
    threshold: float = 0.95
    fired: int | None = None
    arch: list[int] | None = None
    _history: list[tuple[int, ...]] = field(default_factory=list)

    def update(self, round_: int, arch: list[int], path_probs: list[float]) -> bool:
        """Record round ``round_``'s greedy architecture and its choice probabilities; True once fired."""
        self._history.append(tuple(arch))
        if self.fired is None:
            stable = len(self._history) >= self.window and len(set(self._history[-self.window :])) == 1
            if stable and min(path_probs) >= self.threshold:
                self.fired, self.arch = round_, list(arch)
        return self.fired is not None


def rise_upper_bound(rewards: list[float] | np.ndarray, confidence: float = 0.95) -> float:
    """One-sided ``confidence`` upper bound of the rise of ``rewards`` over their span, from an OLS line.

    ``(slope + t * se(slope)) * (n - 1)`` with ``t`` the Student quantile at ``n - 2`` degrees of
    freedom; ``inf`` for fewer than 3 points. A noisy series gets a wide bound, a flat quiet one a
    bound near 0.
    """
    y = np.asarray(rewards, dtype=float)
    n = len(y)
    if n < 3:
        return math.inf
    x = np.arange(n, dtype=float) - (n - 1) / 2.0
    slope = float(x @ (y - y.mean()) / (x @ x))
    resid = y - y.mean() - slope * x
    se = math.sqrt(float(resid @ resid) / (n - 2) / float(x @ x))
    return (slope + float(stats.t.ppf(confidence, n - 2)) * se) * (n - 1)


@dataclass
class RewardStop:
    """Fires when, with ``confidence``, the reward rose by less than ``tol`` over the last ``window`` rounds."""

    window: int = 10
    tol: float = 0.01
    confidence: float = 0.95
    fired: int | None = None
    _rewards: list[float] = field(default_factory=list)

    def update(self, round_: int, reward: float) -> bool:
        """Record round ``round_``'s mean reward; True once fired."""
        self._rewards.append(float(reward))
        if self.fired is None and len(self._rewards) >= max(3, self.window):
            if rise_upper_bound(self._rewards[-self.window :], self.confidence) <= self.tol:
                self.fired = round_
        return self.fired is not None


@dataclass
class EarlyStop:
    """Both rules side by side, fed once per controller round."""

    actions: ActionStop = field(default_factory=ActionStop)
    reward: RewardStop = field(default_factory=RewardStop)

    def update(self, round_: int, arch: list[int], path_probs: list[float], reward: float) -> None:
        self.actions.update(round_, arch, path_probs)
        self.reward.update(round_, reward)

    @property
    def action_stop(self) -> int | None:
        return self.actions.fired

    @property
    def reward_stop(self) -> int | None:
        return self.reward.fired

    @property
    def action_stop_arch(self) -> list[int] | None:
        return self.actions.arch

    @property
    def saved_rounds_frac(self) -> float | None:
        """Share of the reward-convergence search's *rounds* that stopping on actions saves (the
        method records the measured share of search time, ``search_saved_frac``, instead)."""
        if self.action_stop is None or self.reward_stop is None:
            return None
        return (self.reward_stop - self.action_stop) / self.reward_stop
