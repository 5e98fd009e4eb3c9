"""Executable checks of the proxyless-adaptation paper's claims (data in ``methods/paper_claims.json``).

The suite labels entries by method name (``original``, ``nat``, ``adapt_cell``,
``adapt_full``); checks compare methods paired by seed per dataset and model, at each tier
separately (``bench.results.verdict``); ``px-cost`` reads speed-mode rows only.
``px-tiny-imagenet`` reads the short and paper tiers' ``tiny-imagenet`` cells (64 px); the smoke
tier has none, so there it reads "inconclusive (no data)".
``px-ssl`` reads the SimCLR suite (``suites/test_proxyless_ssl.py``): the kNN top-1 that
``simclr*`` methods store as ``test_top1_pct``.
"""

from __future__ import annotations

import pandas as pd

from bench.results.claims import AllOf, Check, Compare, Each, Ratio, Select, Spread, register_check

ACC = "test_top1_pct"
ADAPTED = ("adapt_cell", "adapt_full")


def adapted_vs_original(model: str, op: str = ">", dataset: str | None = None) -> AllOf:
    """adapt_cell and adapt_full ``op`` original on ``model``, per dataset, paired by seed."""
    return AllOf(
        tuple(
            (
                method,
                Compare(
                    Select(ACC, method=method, model=model, dataset=dataset),
                    Select(ACC, method="original", model=model, dataset=dataset),
                    op=op,
                ),
            )
            for method in ADAPTED
        )
    )


def _nat_unstable(model: str) -> AllOf:
    """NAT's accuracy spreads more over seeds than each adapted method's (F-test per dataset)."""
    return AllOf(
        tuple(
            (
                f"std nat > std {method}",
                Spread(Select(ACC, method="nat", model=model), Select(ACC, method=method, model=model), op=">"),
            )
            for method in ADAPTED
        )
    )


def _cost(frame: pd.DataFrame) -> list[tuple[str, Check]]:
    """fit_s of adapt_full / original <= 1.10 and NAT above both, per dataset and model (speed mode)."""
    parts: list[tuple[str, Check]] = []
    models = sorted(frame["model"].dropna().unique()) if "model" in frame else []
    for model in models:

        def sel(method: str, model: str = model) -> Select:
            return Select("fit_s", method=method, model=model, mode="speed")

        every = ("dataset",)
        parts += [
            (f"{model} full/original", Ratio(sel("adapt_full"), sel("original"), 1.10, op="<=", every=every)),
            (f"{model} nat/original", Ratio(sel("nat"), sel("original"), 1.0, op=">", every=every)),
            (f"{model} nat/full", Ratio(sel("nat"), sel("adapt_full"), 1.0, op=">", every=every)),
        ]
    return parts


register_check(
    "px-resnet20",
    AllOf(
        (
            ("adapted > original", adapted_vs_original("resnet20_cells")),
            ("nat unstable", _nat_unstable("resnet20_cells")),
        )
    ),
)
register_check("px-mobilenetv2", adapted_vs_original("mobilenetv2_cifar"))
register_check("px-darts", adapted_vs_original("darts_v2_8", op=">="))
register_check("px-cost", Each(_cost, "fit_s(adapt_full) / fit_s(original) <= 1.10; nat costs more than both"))
register_check(
    "px-tiny-imagenet",
    AllOf(
        tuple(
            (model, adapted_vs_original(model, dataset="tiny-imagenet"))
            for model in ("resnet20_cells", "mobilenetv2_cifar", "darts_v2_8")
        )
    ),
)


SSL_ORIGINAL = "simclr"
SSL_ADAPTED = ("simclr_adapt_cell", "simclr_adapt_full")
SSL_MODELS = ("resnet50_cifar", "darts_v2_8")

# kNN top-1 of every adapted SimCLR variant > plain SimCLR's, per dataset and model, paired by seed.
register_check(
    "px-ssl",
    AllOf(
        tuple(
            (
                f"{model} {method}",
                Compare(Select(ACC, method=method, model=model), Select(ACC, method=SSL_ORIGINAL, model=model), op=">"),
            )
            for model in SSL_MODELS
            for method in SSL_ADAPTED
        )
    ),
)
