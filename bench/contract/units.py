"""Units of metric names: every metric name carries its unit as one of its tokens.

``step_ms_median`` is in milliseconds, ``test_top1_pct`` in percent, ``fit_s`` in
seconds. The recorder rejects a name without a known unit token, so a unit can never
be left to guesswork (timm's ``step_time`` in ms beside ``param_count`` in millions is
the cautionary tale). The same table feeds the Datasette column metadata.
"""

from __future__ import annotations

UNITS: dict[str, str] = {
    "pct": "percent",
    "ms": "milliseconds",
    "s": "seconds",
    "mib": "mebibytes",
    "gflop": "10^9 floating-point operations",
    "mflop": "10^6 floating-point operations",
    "params": "parameter count",
    "count": "count",
    "steps": "optimisation steps",
    "iters": "iterations",
    "nat": "nats (natural-log cross-entropy)",
    "tau": "Kendall tau (dimensionless, -1..1)",
    "rho": "Spearman rho (dimensionless, -1..1)",
    "frac": "fraction (0..1)",
    "ratio": "ratio (dimensionless)",
    "prob": "probability (0..1)",
    "mae": "mean absolute error",
    "mse": "mean squared error",
    "lr": "learning rate",
    "bool": "0/1 flag",
    "images": "image count",
    "updates": "controller or architecture updates",
}


def unit_of(name: str) -> str | None:
    """The unit token of a metric name (the last known token), or None when it has none."""
    for token in reversed(name.split("_")):
        if token in UNITS:
            return token
    return None


def check_metric_name(name: str) -> str:
    """Return ``name`` unchanged, or raise ValueError when it carries no unit token."""
    if not name or unit_of(name) is None:
        raise ValueError(
            f"metric name {name!r} has no unit token; end it with one of: " + ", ".join(f"_{u}" for u in UNITS)
        )
    return name


def chance_pct(num_classes: int) -> float:
    """Top-1 accuracy (%) of a constant guess among ``num_classes`` balanced classes: 100 / k.

    The one definition of chance: a diverged inner run is recorded at it (``bench.engine``)
    and the verdict floor is built on it (``bench.results.claims``)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return 100.0 / num_classes
