"""What the archbench pytest plugin costs a pytest run that has nothing to do with it.

The plugin is installed as a ``pytest11`` entry point, so it loads in every pytest run of the
environment. This script times a one-test pytest run of an unrelated project (a temporary
folder outside this checkout) with the plugin loaded and with ``-p no:bench``, alternating the
two (ABBA) to cancel drift, and prints the medians and their ratio (target: within 1.3x).

    .venv/bin/python benchmarks/plugin_cost.py [--repeats 8]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEST = "def test_unrelated():\n    assert sum(range(10)) == 45\n"


def one_run(folder: Path, extra: list[str]) -> float:
    """Wall seconds of ``python -m pytest -q test_unrelated.py`` in ``folder``."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_unrelated.py", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"pytest failed ({' '.join(cmd)}):\n{proc.stdout}\n{proc.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=8, help="ABBA pairs (default 8)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "test_unrelated.py").write_text(TEST)
        one_run(folder, [])  # warm the file cache once, untimed
        with_plugin: list[float] = []
        without: list[float] = []
        for i in range(args.repeats):
            order = [(with_plugin, []), (without, ["-p", "no:bench"])]
            for sink, extra in order if i % 2 == 0 else order[::-1]:
                sink.append(one_run(folder, extra))
    a, b = statistics.median(with_plugin), statistics.median(without)
    print(f"one-test pytest run of an unrelated project, median of {args.repeats}:")
    print(f"  with the bench plugin:  {a:.3f} s  (min {min(with_plugin):.3f}, max {max(with_plugin):.3f})")
    print(f"  with -p no:bench:       {b:.3f} s  (min {min(without):.3f}, max {max(without):.3f})")
    print(f"  ratio: {a / b:.2f}x (target <= 1.3x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
