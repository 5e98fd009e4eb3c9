"""``bench claims --format md``: one table per paper with provenance, CI, n and censoring, verdict and command."""

from __future__ import annotations

from bench.cli import main
from bench.contract.cell import CellResult, CellSpec
from bench.results.claims import Claim, ClaimRow, load_claims_file
from bench.results.claims_md import render_markdown
from bench.results.store import Store
from bench.results.verdict import Outcome

A = Claim(
    id="a-gain",
    paper="001.txt",
    method="m",
    metric="test_top1_pct",
    baseline="b",
    paper_value=87.4,
    paper_baseline_value=86.4,
    where="Fig. 3 | left",
    paper_title="Paper One",
    suite="suites/test_one.py",
)
B = Claim(id="b-cost", paper="000.txt", method="m", metric="x", paper_value={"cifar10": [0.7, 0.9]}, unit="GB")


def test_one_section_per_paper_with_ci_n_censoring_verdict_and_command():
    rows = [
        ClaimRow(
            A,
            "cpu",
            Outcome("reproduced", effect=1.25, ci_low=0.5, ci_high=2.0, n=5, n_censored=1, ours=91.0, baseline=89.75),
        ),
        ClaimRow(B, "any", Outcome("inconclusive", reason="no data")),
    ]
    md = render_markdown(rows, commit="abc123", db="evidence.db")
    assert "commit `abc123`, from database `evidence.db`" in md
    assert "**2 claim verdicts: 1 reproduced, 0 not reproduced, 1 inconclusive (1 no data).**" in md
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections == ["## 000.txt", "## Paper One"]  # ordered by paper file; the title where one is given
    (a_line,) = [line for line in md.splitlines() if line.startswith("| `a-gain`")]
    cells = [c.strip() for c in a_line.strip("|").split(" | ")]
    assert cells == [
        "`a-gain`",
        "Fig. 3 \\| left",  # a pipe in the text cannot break the table
        "87.4 vs 86.4",
        "effect 1.25 [0.5, 2]; 91 vs 89.75",
        "5 (1 censored)",
        "**reproduced**",
        "",
        "cpu",
        "`pytest suites/test_one.py --bench-budget cpu`",
    ]
    (b_line,) = [line for line in md.splitlines() if line.startswith("| `b-cost`")]
    assert '{"cifar10": [0.7, 0.9]} GB' in b_line and "| inconclusive | no data | any |" in b_line
    at_cpu = render_markdown(rows, tier="cpu")
    assert at_cpu.startswith("# Claims at the cpu tier\n")
    (b_cpu,) = [line for line in at_cpu.splitlines() if line.startswith("| `b-cost`")]
    assert b_cpu.endswith("| any |  |")  # no suite named for B: no command rather than a wrong one


def test_the_paper_map_names_each_papers_claims_and_a_claims_own_suite_wins(tmp_path):
    path = tmp_path / "claims.json"
    path.write_text(
        '{"papers": {"p.txt": {"title": "T", "suite": "suites/test_p.py"}}, "claims": ['
        '{"id": "one", "paper": "p.txt", "method": "m", "metric": "x"},'
        '{"id": "two", "paper": "p.txt", "method": "m", "metric": "x", "suite": "suites/test_q.py"},'
        '{"id": "three", "paper": "other.txt", "method": "m", "metric": "x"}]}'
    )
    one, two, three = load_claims_file(path)
    assert (one.paper_title, one.suite) == ("T", "suites/test_p.py")
    assert (two.paper_title, two.suite) == ("T", "suites/test_q.py")
    assert (three.paper_title, three.suite) == ("", "")


def test_bench_claims_format_md_writes_the_document_with_the_rows_commit(tmp_path, capsys):
    db = tmp_path / "r.db"
    with Store(db) as store:
        run = store.start_run({"tier": "cpu", "git_sha": "0123456789abcdef0123", "git_dirty": 1})
        spec = CellSpec(suite="s", method="m", variant="m", dataset="uci-digits", model="resnet20", seed=0)
        store.write_result(run, CellResult(spec=spec, status="ok", metrics={"test_top1_pct": 90.0}))
    out = tmp_path / "evidence.md"
    assert main(["claims", "--db", str(db), "--format", "md", "--out", str(out), "--no-write", "--tier", "cpu"]) == 0
    assert "verdicts ->" in capsys.readouterr().out
    text = out.read_text()
    assert text.startswith("# Claims at the cpu tier\n") and "## Tr-NAS: memory-efficient" in text
    assert "`pytest suites/test_trnas.py --bench-budget cpu`" in text  # no data yet: the command that would measure it
    assert "commit `0123456789ab+dirty`" in text  # the runs' provenance, a modified tree marked
    assert text.count("\n## ") == 4  # the four papers with claims
