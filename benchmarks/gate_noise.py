"""The smoke gate's noise model, false-alarm rate and catch rate, measured by rerunning the smoke suites.

    python benchmarks/gate_noise.py calibrate --out suites/reference/smoke.json        # make reference
    python benchmarks/gate_noise.py false-alarms --reference suites/reference/smoke.json  # make gate-noise

**calibrate** runs the smoke suites as the reference (``make smoke-run``, tag ``reference``),
then once per calibration perturbation, each into its own database with fresh caches, and
exports the reference with the noise model measured from them (``bench reference export
--calibrate``, ``bench.gate.noise``). Perturbations of the *same* arithmetic: ``busy`` (both
cores kept busy by two spinning processes), ``shuffled`` (cells in a seeded random
order); of *cross* arithmetic: ``threads2`` (one xdist worker with two torch threads), ``isa-default``
(ATen's default kernels, oneDNN capped at SSE4.1, MKL's compatible path: a CPU without
AVX2), ``native`` (no pins: AVX-512 / AMX where the CPU has them). ``--external LABEL=FILE``
adds a reference file of the same code made on another machine as one more cross sample
(cells whose config differs are left out).

**false-alarms** reruns the suites under perturbations that were *not* part of the
calibration (``busy`` again, another shuffle, the pinned run on a cache a native run
filled, oneDNN at AVX-512 with ATen and MKL pinned) and gates each against the reference:
every failing decision is a false alarm. With the calibration databases at hand
(``--workdir``), each cross calibration run is also gated against a noise model rebuilt
without it (leave one out). Then it injects regressions into copies of the first
same-arithmetic rerun (and of one cross rerun): a 5-point drop of every gated uci-digits
cell (10 points, 4 of 40 images, on lfw-faces), one failed seed in every cell, and one
lost seed in every cell with more than one; the catch rate is the share the gate fails.
Everything is printed as markdown and written as JSON to ``WORKDIR/gate-noise.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PINNED = "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2"


@dataclass(frozen=True)
class Perturbation:
    """One rerun of the smoke suites: what differs from the reference run."""

    name: str
    expect: str  # the noise class it should fall in ("same" or "cross")
    pins: str = PINNED
    threads: int = 1
    workers: int = 2
    args: str = ""
    env: dict[str, str] = field(default_factory=dict)
    busy: int = 0  # spinning processes kept alive during the run
    cache_from: str = ""  # reuse (and keep) the cache another run filled


SHUFFLE = "-p shuffle_order"
CALIBRATION = (
    Perturbation("busy", "same", busy=2),
    Perturbation("shuffled", "same", args=SHUFFLE, env={"GATE_NOISE_SHUFFLE_SEED": "1"}),
    Perturbation("threads2", "cross", threads=2, workers=1),  # one worker: 2 threads without oversubscription
    Perturbation(
        "isa-default", "cross", pins="ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_CBWR=COMPATIBLE"
    ),
    Perturbation("native", "cross", pins=""),
)
FALSE_ALARM = (
    Perturbation("busy-again", "same", busy=2),
    Perturbation("shuffled-2", "same", args=SHUFFLE, env={"GATE_NOISE_SHUFFLE_SEED": "2"}),
    Perturbation("warm-native-cache", "same", cache_from="native"),
    Perturbation(
        "onednn-avx512", "cross", pins="ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX512_CORE MKL_CBWR=AVX2"
    ),
)
BY_NAME = {p.name: p for p in (*CALIBRATION, *FALSE_ALARM)}


# --- running the suites ---------------------------------------------------------------------------


def db_path(workdir: Path, name: str) -> Path:
    return workdir / f"{name}.db"


def cache_path(workdir: Path, name: str) -> Path:
    return workdir / f"cache-{name}"


def smoke_run(p: Perturbation | None, workdir: Path) -> dict[str, Any]:
    """``make smoke-run`` for the reference (``p`` None) or one perturbation; its wall time and exit code."""
    name = "reference" if p is None else p.name
    p = p or Perturbation("reference", "same")
    cache = cache_path(workdir, p.cache_from or name)
    make = [
        "make",
        "--no-print-directory",
        "smoke-run",
        f"SMOKE_DB={db_path(workdir, name)}",
        f"SMOKE_TAG={name}",
        f"SMOKE_CACHE={cache}",
        f"SMOKE_PINS={p.pins}",
        f"SMOKE_THREADS={p.threads}",
        f"SMOKE_ARGS={p.args}",
        f"WORKERS={p.workers}",
    ]
    if p.cache_from:
        make.append("SMOKE_KEEP_CACHE=1")
    env = {**os.environ, **p.env, "PYTHONPATH": str(ROOT / "benchmarks")}
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(p.busy)]
    t0 = time.perf_counter()
    try:
        with open(workdir / f"{name}.log", "w") as log:
            code = subprocess.run(make, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    finally:
        for s in spinners:
            s.kill()
    seconds = time.perf_counter() - t0
    print(f"{name}: exit {code} in {seconds / 60:.1f} min ({shlex.join(make[2:])})", flush=True)
    return {"name": name, "exit": code, "wall_s": round(seconds, 1)}


# --- calibrate ----------------------------------------------------------------------------------------


def calibrate(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    chosen = [BY_NAME[n] for n in args.runs.split(",")] if args.runs else list(CALIBRATION)
    timings = [] if args.reuse else [smoke_run(None, workdir)] + [smoke_run(p, workdir) for p in chosen]
    cmd = [
        str(ROOT / ".venv" / "bin" / "bench"),
        "reference",
        "export",
        "--db",
        str(db_path(workdir, "reference")),
        "--run",
        "tag:reference",
        "--config",
        args.config,
        "-o",
        args.out,
    ]
    for p in chosen:
        cmd += ["--calibrate", f"{p.name}={db_path(workdir, p.name)}:tag:{p.name}"]
    for spec in args.external:
        cmd += ["--calibrate", spec]
    code = subprocess.run(cmd, cwd=ROOT).returncode
    (workdir / "calibrate.json").write_text(json.dumps({"runs": timings, "export_exit": code}, indent=1))
    return code


# --- false alarms and catch rate ---------------------------------------------------------------------


def load(selector: str) -> Any:
    from bench.gate.reference import load_side

    return load_side(selector, ROOT / "results.db")


def gate(ref: Any, cand: Any, settings: Any) -> Any:
    from bench.gate.rules import evaluate

    return evaluate(ref, cand, settings)


def alarms(report: Any) -> list[str]:
    return [f"{d.cell} {d.metric}: {d.verdict} ({d.reason})" for d in report.failures]


def leave_one_out(ref_file: Any, workdir: Path, settings: Any) -> list[dict[str, Any]]:
    """Each cross calibration run gated against the noise model rebuilt from the other runs."""
    from bench.cli.gate import calibrate_sides

    runs = ref_file.calibration.get("runs", [])
    ref_db = db_path(workdir, "reference")
    if not ref_db.exists() or not runs:
        return []
    reference = load(f"{ref_db}:tag:reference")
    sides = {}
    for r in runs:
        source = r.get("source") or f"{db_path(workdir, r['label'])}:tag:{r['label']}"
        path = Path(source.split(".db:")[0] + ".db" if ".db:" in source else source)
        if path.exists():
            sides[r["label"]] = load(source)
    out = []
    for label, side in sides.items():
        if side.run.get("arith") == reference.run.get("arith"):
            continue
        noise, calibration, _ = calibrate_sides(reference, [(k, v) for k, v in sides.items() if k != label], settings)
        held_out = dataclasses.replace(reference, noise=noise, calibration=calibration)
        report = gate(held_out, side, settings)
        out.append(
            {
                "run": f"{label} (left out)",
                "class": "cross",
                "decisions": len(report.decisions),
                "false_alarms": alarms(report),
                "not_gated": report.counts()["not gated"],
            }
        )
    return out


def _with(cand: Any, key: tuple, change: Any) -> Any:
    """A copy of side ``cand`` whose rows of cell ``key`` went through ``change(row) -> row | None``."""
    rows = []
    for r in cand.rows:
        if r.key == key:
            r = change(dataclasses.replace(r, metrics=dict(r.metrics)))
        if r is not None:
            rows.append(r)
    return dataclasses.replace(cand, rows=rows)


def injections(ref: Any, cand: Any, settings: Any) -> dict[str, dict[str, Any]]:
    """Inject each regression into a copy of ``cand``; which ones the gate fails (see the module docstring)."""
    base = gate(ref, cand, settings)
    verdict = {(d.key, d.metric): d.verdict for d in base.decisions}
    keys = sorted({r.key for r in cand.rows if r.status == "ok"})
    out: dict[str, dict[str, Any]] = {}

    def record(kind: str, key: tuple, caught: bool | None) -> None:
        slot = out.setdefault(kind, {"injected": 0, "caught": 0, "not_gated": 0, "missed": []})
        if caught is None:
            slot["not_gated"] += 1
            return
        slot["injected"] += 1
        slot["caught"] += int(caught)
        if not caught:
            slot["missed"].append("/".join(key[:4]))

    def fails(side: Any, key: tuple, metric: str, verdicts: tuple[str, ...]) -> bool:
        report = gate(ref, side, settings)
        return any(
            d.key == key and d.metric == metric and d.verdict in verdicts and report.failing(d)
            for d in report.decisions
        )

    for key in keys:
        drop = {"uci-digits": 5.0, "lfw-faces": 10.0}.get(key[2])
        if drop is not None:
            kind = f"drop {drop:g} points ({key[2]})"
            if verdict.get((key, "test_top1_pct")) in (None, "not gated"):
                record(kind, key, None)
            else:

                def lower(r: Any, drop: float = drop) -> Any:
                    if "test_top1_pct" in r.metrics:
                        r.metrics["test_top1_pct"] -= drop
                    return r

                record(kind, key, fails(_with(cand, key, lower), key, "test_top1_pct", ("regression",)))
        seeds = sorted(r.seed for r in cand.rows if r.key == key)

        def fail(r: Any, last: int = seeds[-1]) -> Any:
            return (
                dataclasses.replace(r, status="failed", metrics={}, error="RuntimeError: injected")
                if r.seed == last
                else r
            )

        record("one seed failed", key, fails(_with(cand, key, fail), key, "status", ("regression",)))
        if len(seeds) > 1:
            record(
                "one seed lost",
                key,
                fails(
                    _with(cand, key, lambda r, first=seeds[0]: None if r.seed == first else r),
                    key,
                    "status",
                    ("missing",),
                ),
            )
    return out


def false_alarms(args: argparse.Namespace) -> int:
    from bench.gate.noise import noise_class
    from bench.gate.settings import load_config

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    settings = load_config(args.config)
    ref = load(args.reference)
    chosen = [BY_NAME[n] for n in args.runs.split(",")] if args.runs else list(FALSE_ALARM)
    rows, timings, cands = [], {}, {}
    for p in chosen:
        if not args.reuse:
            timings[p.name] = smoke_run(p, workdir)
        cand = load(f"{db_path(workdir, p.name)}:cells")
        report = gate(ref, cand, settings)
        cands[p.name] = (p, cand)
        rows.append(
            {
                "run": p.name,
                "class": noise_class(ref.run.get("arith"), cand.run.get("arith")),
                "decisions": len(report.decisions),
                "false_alarms": alarms(report),
                "not_gated": report.counts()["not gated"],
                "wall_s": timings.get(p.name, {}).get("wall_s"),
            }
        )
    rows += leave_one_out(ref, workdir, settings)
    caught = {}
    for expect in ("same", "cross"):
        pick = next((c for p, c in cands.values() if p.expect == expect), None)
        if pick is not None:
            caught[expect] = injections(ref, pick, settings)
    print(render(rows, caught))
    (workdir / "gate-noise.json").write_text(json.dumps({"runs": rows, "injections": caught}, indent=1))
    return 0


def render(rows: list[dict[str, Any]], caught: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| perturbed run | noise class | wall (min) | decisions | not gated | false alarms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        wall = f"{r['wall_s'] / 60:.1f}" if r.get("wall_s") else "-"
        lines.append(
            f"| {r['run']} | {r['class']} | {wall} | {r['decisions']} | {r['not_gated']} | {len(r['false_alarms'])} |"
        )
    total = sum(len(r["false_alarms"]) for r in rows)
    lines += ["", f"false alarms: {total} in {len(rows)} perturbed gate runs ({total / max(1, len(rows)):.2f} per run)"]
    for r in rows:
        lines += [f"- {r['run']}: {a}" for a in r["false_alarms"]]
    for expect, kinds in caught.items():
        lines += [
            "",
            f"Injected regressions into the first {expect}-arithmetic rerun:",
            "",
            "| injection | injected | caught | catch rate | not gated (noise or chance) |",
            "|---|---:|---:|---:|---:|",
        ]
        for kind, s in kinds.items():
            rate = f"{100 * s['caught'] / s['injected']:.0f}%" if s["injected"] else "-"
            lines.append(f"| {kind} | {s['injected']} | {s['caught']} | {rate} | {s['not_gated']} |")
        for kind, s in kinds.items():
            if s["missed"]:
                lines.append(f"- missed ({kind}): {', '.join(s['missed'])}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, fn in (("calibrate", calibrate), ("false-alarms", false_alarms)):
        p = sub.add_parser(name)
        p.add_argument("--workdir", default=".bench/noise", help="databases, caches and logs of the reruns")
        p.add_argument("--config", default="suites/reference/gate.toml")
        p.add_argument("--runs", default="", help="comma-separated perturbation names (default: all of the step)")
        p.add_argument("--reuse", action="store_true", help="reuse the databases already in --workdir")
        p.set_defaults(func=fn)
        if name == "calibrate":
            p.add_argument("--out", default="suites/reference/smoke.json")
            p.add_argument(
                "--external",
                action="append",
                default=[],
                metavar="LABEL=FILE.json",
                help="a reference file of the same code from another machine, as one more cross sample",
            )
        else:
            p.add_argument("--reference", default="suites/reference/smoke.json")
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
