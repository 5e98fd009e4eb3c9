"""The ``bench`` command: ``main`` dispatches to one module per command."""

from bench.cli.dispatch import main

__all__ = ["main"]
