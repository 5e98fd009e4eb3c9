"""The README documents what the code provides: every registered name, option and column."""
import re
from pathlib import Path

import pytest

from bench.registry import DATASETS, METHODS, MODELS
from bench.store import Store

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_starts_with_the_two_commands():
    first_block = README.split("```")[1]
    assert "make bench" in first_block and "make test" in first_block


@pytest.mark.parametrize("registry", [METHODS, MODELS, DATASETS], ids=["methods", "models", "datasets"])
def test_every_registered_name_documented(registry):
    missing = [n for n in registry.names() if f"`{n}`" not in README]
    assert not missing, f"README does not mention {missing}"


def test_every_option_documented():
    plugin = (Path(__file__).resolve().parent.parent / "bench" / "plugin.py").read_text()
    options = set(re.findall(r'"(--bench-[a-z-]+)"', plugin))
    assert len(options) >= 9
    missing = [o for o in sorted(options) if f"`{o}" not in README]
    assert not missing, f"README does not document {missing}"


def test_every_store_column_documented(tmp_path):
    with Store(tmp_path / "x.db") as store:
        for table in ("runs", "results", "metrics", "series"):
            missing = [c.name for c in store.db[table].columns if f"`{c.name}`" not in README]
            assert not missing, f"README does not document {table} columns {missing}"
