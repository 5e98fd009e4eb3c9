"""The docs document what the code provides: every registered name, option and column.

README.md holds the harness (options, store columns, the map) and links one README per
method family, beside its code (``methods/<family>/README.md``). Registered names are
looked up in all of them, but a method must be documented by its own family's README:
the family is the ``methods`` subpackage its registered class is defined in. Methods
defined in a plain module of ``methods`` (the baselines) belong to README.md or the
optional ``methods/README.md`` index.
"""

import re
from pathlib import Path

import pytest

from bench.registry import DATASETS, METHODS, MODELS
from bench.results.store import Store

ROOT = Path(__file__).resolve().parent.parent
README_PATH = ROOT / "README.md"
README = README_PATH.read_text()
METHODS_INDEX = ROOT / "methods" / "README.md"
FAMILY_DOCS = sorted((ROOT / "methods").glob("*/README.md"))
TOP_DOCS = [README_PATH] + ([METHODS_INDEX] if METHODS_INDEX.exists() else [])
ALL_DOCS = TOP_DOCS + FAMILY_DOCS
ALL_TEXT = "\n".join(p.read_text() for p in ALL_DOCS)
MAX_README_BYTES = 40_000

# [text](target) outside code; the target without its #anchor or "title".
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>#]*)[^)]*\)")


def _local_links(path: Path) -> list[Path]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    targets = [t for t in LINK.findall(text) if t and not re.match(r"[a-z][a-z0-9+.-]*:", t)]
    return [(path.parent / t).resolve() for t in targets]


def _family_docs(name: str) -> list[Path]:
    """The docs that must document method ``name``: its family's README, or the top-level docs."""
    module = getattr(METHODS.get(name), "__module__", "") or ""
    parts = module.split(".")
    if len(parts) >= 3 and parts[0] == "methods" and (ROOT / "methods" / parts[1] / "__init__.py").exists():
        return [ROOT / "methods" / parts[1] / "README.md"]
    return TOP_DOCS


def test_starts_with_the_two_commands():
    first_block = README.split("```")[1]
    assert "make bench" in first_block and "make test" in first_block


def test_readme_stays_short():
    size = len(README.encode())
    assert size < MAX_README_BYTES, (
        f"README.md is {size} bytes (limit {MAX_README_BYTES}); move method detail to methods/<family>/README.md"
    )


def test_there_are_family_docs():
    assert FAMILY_DOCS, "no methods/*/README.md found"


@pytest.mark.parametrize("registry", [METHODS, MODELS, DATASETS], ids=["methods", "models", "datasets"])
def test_every_registered_name_documented(registry):
    missing = [n for n in registry.names() if f"`{n}`" not in ALL_TEXT]
    assert not missing, f"neither README.md nor the method READMEs mention {missing}"


def test_every_method_documented_by_its_family():
    missing = {}
    for name in METHODS.names():
        docs = _family_docs(name)
        if not any(p.exists() and f"`{name}`" in p.read_text() for p in docs):
            missing[name] = [str(p.relative_to(ROOT)) for p in docs]
    assert not missing, f"methods not documented in their family's README: {missing}"


def test_readme_links_every_family_doc():
    linked = set(_local_links(README_PATH))
    unlinked = [str(p.relative_to(ROOT)) for p in FAMILY_DOCS if p.resolve() not in linked]
    assert not unlinked, f"README.md links none of {unlinked}"


@pytest.mark.parametrize("doc", ALL_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_linked_files_exist(doc):
    broken = [str(t) for t in _local_links(doc) if not t.exists()]
    assert not broken, f"{doc.relative_to(ROOT)} links missing files {broken}"


def test_every_option_documented():
    plugin = (ROOT / "bench" / "execute" / "plugin.py").read_text()
    options = set(re.findall(r'"(--bench-[a-z-]+)"', plugin))
    assert len(options) >= 9
    missing = [o for o in sorted(options) if f"`{o}" not in README]
    assert not missing, f"README does not document {missing}"


def test_every_store_column_documented(tmp_path):
    with Store(tmp_path / "x.db") as store:
        for table in ("runs", "results", "metrics", "series"):
            missing = [c.name for c in store.db[table].columns if f"`{c.name}`" not in README]
            assert not missing, f"README does not document {table} columns {missing}"
