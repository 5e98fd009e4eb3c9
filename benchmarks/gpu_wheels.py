"""`make gpu-wheels`: the project's dependencies a GPU node lacks, as wheels for its Python.

A GPU node may have no network and its own torch (2.11 on ours, Python 3.12). This walks the
project's requirements (``archbench``'s ``Requires-Dist``, transitively, as installed in this
venv), drops what the node's image already holds (``benchmarks/gpu_image_packages.txt``) and
torch's own stack, and downloads the exact versions installed here as wheels for the node's
Python and platform into an ignored folder (``.whl``). ``make gpu-check`` installs them from
there with ``pip install --no-index --no-deps``: nothing is fetched on the node.

    python benchmarks/gpu_wheels.py --dest .whl --python-version 3.12
    python benchmarks/gpu_wheels.py --list        # the names and versions only
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

HERE = Path(__file__).resolve().parent
# Never carried: the node's own torch stack must be the one that runs.
NEVER = {"torch", "torchvision", "triton", "numpy", "setuptools", "pip", "wheel"}
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def norm(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages(path: Path = HERE / "gpu_image_packages.txt") -> set[str]:
    return {norm(line.strip()) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


def requirements(root: str = "archbench") -> dict[str, str]:
    """Every distribution ``root`` needs (no extras), transitively: name -> installed version."""
    seen: dict[str, str] = {}
    todo = [Requirement(r) for r in md.metadata(root).get_all("Requires-Dist") or []]
    todo = [r for r in todo if not (r.marker and not r.marker.evaluate({"extra": ""}))]
    while todo:
        req = todo.pop()
        name = norm(req.name)
        if name in seen:
            continue
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            continue
        seen[name] = dist.version
        for text in dist.requires or []:
            sub = Requirement(text)
            if sub.marker is None or sub.marker.evaluate({"extra": ""}):
                todo.append(sub)
    return seen


def missing() -> dict[str, str]:
    """What the node lacks: the requirements minus its image and the torch stack."""
    have = image_packages() | NEVER
    return {n: v for n, v in sorted(requirements().items()) if n not in have and not n.startswith("nvidia-")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default=".whl", help="folder for the wheels (default .whl, git-ignored)")
    ap.add_argument("--python-version", default="3.12", help="the node's Python (default 3.12)")
    ap.add_argument("--list", action="store_true", help="print what would be downloaded and stop")
    args = ap.parse_args(argv)
    wanted = missing()
    for name, version in wanted.items():
        print(f"{name}=={version}")
    if args.list:
        return 0
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
    failed = []
    for name, version in wanted.items():
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(dest),
               "--python-version", args.python_version, "--implementation", "cp", *platform_args,
               f"{name}=={version}"]  # fmt: skip
        if subprocess.run(cmd, check=False).returncode != 0:
            failed.append(f"{name}=={version}")
    size = sum(p.stat().st_size for p in dest.glob("*.whl")) / 2**20
    print(f"{len(wanted) - len(failed)} wheel(s) in {dest} ({size:.1f} MiB)")
    if failed:
        print(f"no wheel for Python {args.python_version}: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
