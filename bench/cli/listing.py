"""``bench list``: the registered methods, models and datasets."""

from __future__ import annotations

import argparse


def _list(args: argparse.Namespace) -> int:
    from bench.registry import DATASETS, METHODS, MODELS

    registries = {"methods": METHODS, "models": MODELS, "datasets": DATASETS}
    for kind in [args.kind] if args.kind else list(registries):
        print(f"{kind}: {', '.join(registries[kind].names())}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="registered methods, models and datasets")
    p.add_argument("kind", nargs="?", choices=("methods", "models", "datasets"))
    p.set_defaults(func=_list)
