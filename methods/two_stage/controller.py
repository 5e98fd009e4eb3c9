"""The subnet-sampling controller and the early-stopping rules of the search.

``Controller``: an ENAS-style LSTM cell fed an embedding of the previous action (a
start token first), with one softmax head per mutable layer in network order. Actions
are sampled during the search; the final architecture is the argmax rollout.

``EnasReinforce``: REINFORCE on the sampled subnets' rewards (accuracy of the subnet on a
held-out batch, plus an entropy bonus), with an exponential moving-average baseline
``b <- b - (1 - decay) (b - R)`` and Adam. ``estimate_probs`` gives P(a_k = 5x5) per
layer from rollouts, the quantity whose heatmap is the paper's Fig. 4.

``EarlyStop``: the paper's rule (ours where it is vague): stop when the argmax
architecture has not changed for ``window`` updates *and* every layer's probability is
decided beyond ``threshold``; and the comparator it is measured against, reward
convergence: a plateau of the mean reward, i.e. the mean over the last
``reward_window`` updates differs from the mean over the ``reward_window`` before it by
at most ``reward_tol``. (An EMA with decay 0.99 is no convergence signal: it moves 1%
of the gap per update, so any window of it looks flat.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical


class Controller(nn.Module):
    """LSTM policy over ``num_layers`` binary choices (0: 3x3, 1: 5x5)."""

    def __init__(self, num_layers: int, hidden: int = 64, tanh_c: float = 0.0) -> None:
        super().__init__()
        self.num_layers, self.hidden, self.tanh_c = num_layers, hidden, tanh_c
        self.embed = nn.Embedding(3, hidden)  # 0, 1: previous action; 2: start token
        self.lstm = nn.LSTMCell(hidden, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, 2) for _ in range(num_layers))
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)
        for head in self.heads:
            nn.init.zeros_(head.bias)

    def rollout(
        self, n: int, *, greedy: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` rollouts: actions ``[n, L]``, summed log-probabilities ``[n]`` and entropies ``[n]``."""
        device = self.embed.weight.device
        inp = torch.full((n,), 2, dtype=torch.long, device=device)
        h = c = torch.zeros(n, self.hidden, device=device)
        actions, log_probs, entropies = [], [], []
        for head in self.heads:
            h, c = self.lstm(self.embed(inp), (h, c))
            logits = head(h)
            if self.tanh_c:
                logits = self.tanh_c * torch.tanh(logits)
            dist = Categorical(logits=logits)
            if greedy:
                action = logits.argmax(-1)
            else:
                action = torch.multinomial(dist.probs, 1, generator=generator).squeeze(-1)
            actions.append(action)
            log_probs.append(dist.log_prob(action))
            entropies.append(dist.entropy())
            inp = action
        return torch.stack(actions, 1), torch.stack(log_probs, 1).sum(1), torch.stack(entropies, 1).sum(1)

    @torch.no_grad()
    def estimate_probs(self, rollouts: int, generator: torch.Generator | None = None) -> np.ndarray:
        """P(a_k = 1) for every layer, estimated from ``rollouts`` samples."""
        actions, _, _ = self.rollout(rollouts, generator=generator)
        return actions.float().mean(0).cpu().numpy()

    @torch.no_grad()
    def argmax(self) -> list[int]:
        """The greedy architecture."""
        return self.rollout(1, greedy=True)[0][0].tolist()


@dataclass
class EnasReinforce:
    """REINFORCE for the two-stage controller, in the ENAS style (Pham et al. 2018).

    Per update, with rewards ``r_i`` of the sampled subnets, log-probabilities ``log p_i`` and
    entropies ``H_i``:

    - the entropy is a bonus **in the reward**: ``R_i = r_i + entropy_weight * H_i`` (detached, so
      it shapes the advantage but is not differentiated);
    - the advantage uses the baseline **before** this update: ``A_i = R_i - b`` (``b`` starts at the
      first batch's mean ``R``);
    - loss ``-mean(A_i * log p_i)``, one Adam step;
    - **then** the baseline moves toward this batch: ``b <- b - (1 - decay) * (b - mean(R))``.

    It differs from ``methods.proxyless.nat.NatReinforce`` (entropy as a differentiated loss term,
    baseline updated before the advantage): the two learners come from different papers and each
    keeps its own update, so they are two classes, not one with flags.
    """

    controller: Controller
    lr: float = 3.5e-4
    entropy_weight: float = 1e-4
    baseline_decay: float = 0.99
    baseline: float | None = None
    optimizer: torch.optim.Optimizer = field(init=False)

    def __post_init__(self) -> None:
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=self.lr)

    def step(self, log_probs: torch.Tensor, entropies: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        """One policy-gradient update from a batch of sampled subnets and their rewards."""
        shaped = rewards + self.entropy_weight * entropies.detach()
        mean = float(shaped.mean())
        if self.baseline is None:
            self.baseline = mean
        advantage = shaped - self.baseline
        loss = -(advantage.detach() * log_probs).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.baseline -= (1.0 - self.baseline_decay) * (self.baseline - mean)
        return {"reward": float(rewards.mean()), "baseline": self.baseline, "entropy": float(entropies.detach().mean())}


@dataclass
class EarlyStop:
    """Both stopping rules, fed once per controller update; see the module docstring."""

    window: int = 10
    threshold: float = 0.95
    reward_window: int = 10
    reward_tol: float = 0.01
    action_stop: int | None = None
    reward_stop: int | None = None
    action_stop_arch: list[int] | None = None
    _argmaxes: list[tuple[int, ...]] = field(default_factory=list)
    _rewards: list[float] = field(default_factory=list)

    def update(self, update: int, probs: np.ndarray, reward: float) -> None:
        """Record update ``update``'s probabilities and mean reward; fire each rule once."""
        arch = tuple(int(p > 0.5) for p in probs)
        self._argmaxes.append(arch)
        self._rewards.append(float(reward))
        decided = float(np.min(np.maximum(probs, 1.0 - probs))) >= self.threshold
        stable = len(self._argmaxes) >= self.window and len(set(self._argmaxes[-self.window :])) == 1
        if self.action_stop is None and decided and stable:
            self.action_stop, self.action_stop_arch = update, list(arch)
        w = self.reward_window
        if self.reward_stop is None and len(self._rewards) >= 2 * w:
            last, before = np.mean(self._rewards[-w:]), np.mean(self._rewards[-2 * w : -w])
            if abs(last - before) <= self.reward_tol:
                self.reward_stop = update

    @property
    def saved_frac(self) -> float | None:
        """Share of the reward-convergence search cost that stopping on actions saves."""
        if self.action_stop is None or self.reward_stop is None:
            return None
        return (self.reward_stop - self.action_stop) / self.reward_stop
