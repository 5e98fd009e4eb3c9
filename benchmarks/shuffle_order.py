"""pytest plugin for ``benchmarks/gate_noise.py``: run the suites' cells in a seeded random order.

Loaded with ``-p shuffle_order`` (this folder on ``PYTHONPATH``); ``GATE_NOISE_SHUFFLE_SEED``
picks the order. Every xdist worker shuffles the same way, so their collections agree, and the
cells reach the workers in an order unlike the default one: a cell whose result depended on what
its worker ran before would show up as noise in the calibration.
"""

from __future__ import annotations

import os
import random

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    random.Random(int(os.environ.get("GATE_NOISE_SHUFFLE_SEED", "1"))).shuffle(items)
