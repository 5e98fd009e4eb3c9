# The two commands: `make bench` (default suites -> results.db -> summary) and `make test`
# (lint and type check, unit tests, then the smoke suites gated against the committed reference).
# Both bootstrap .venv on first use and reinstall when pyproject.toml changes.
# `make reference` re-runs the smoke suites under perturbations and refreshes
# suites/reference/smoke.json with its noise model; `make gate-noise` measures the gate's
# false-alarm and catch rates.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The torch pair that installs from this machine's disk; override with TORCH_SPEC= to let pip choose.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DB     ?= results.db
BUDGET ?= smoke
WORKERS ?= 2
SUITES ?= suites
STAMP  := $(VENV)/.installed
# `make test` also needs the test extra (pytest-asyncio, playwright, ruff, mypy); `make bench` does not.
TEST_STAMP := $(VENV)/.installed-test
LINT_PATHS := bench methods tests suites benchmarks
# The smoke gate: a scratch database (*.db is gitignored), the committed reference and its tolerances.
CI_DB       ?= .bench/ci.db
REFERENCE   ?= suites/reference/smoke.json
GATE_CONFIG ?= suites/reference/gate.toml
# `smoke-run`: the smoke suites as the reference, its calibration reruns and the CI gate run them.
# One torch thread per worker whatever the core count, and every CPU math library pinned to its
# AVX2 code path (ATen kernels, oneDNN convolutions, MKL's conditional numerical reproducibility).
# The caches live in a folder of their own that each run starts empty (bench.cache), so no run
# reads what `make bench` or an earlier run left. The gate's noise model (bench.gate.noise) covers what
# the pins cannot: another CPU model, thread count or ISA. `benchmarks/gate_noise.py` sets the
# SMOKE_* variables for its perturbed reruns.
SMOKE_DB      ?= $(CI_DB)
SMOKE_TAG     ?= ci
SMOKE_CACHE   ?= .bench/smoke-cache
SMOKE_PINS    ?= ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2
SMOKE_THREADS ?= 1
SMOKE_ARGS    ?=
SMOKE_KEEP_CACHE ?=
UNPIN = -u ATEN_CPU_CAPABILITY -u ONEDNN_MAX_CPU_ISA -u DNNL_MAX_CPU_ISA -u MKL_CBWR -u BENCH_CACHE_DIR

# `make evidence`: the `cpu` tier (real data, Fashion-MNIST, on 2 CPU cores) into $(EVIDENCE_DB), then
# the claims at that tier and the per-paper document suites/reference/evidence.md. Only the suites
# that define a cpu tier are run (the others would refuse the tier at collection).
EVIDENCE_DB     ?= evidence.db
EVIDENCE_SUITES ?= suites/test_trnas.py
EVIDENCE_MD     ?= suites/reference/evidence.md

.PHONY: bench test lint smoke-run smoke-gate reference gate-noise evidence gpu-check gpu-wheels venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/python -m pip install -q $(TORCH_SPEC); fi
	$(BIN)/python -m pip install -q -e .
	@touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $(TEST_STAMP)

bench: $(STAMP)
	$(BIN)/python -m pytest $(SUITES) -p no:cacheprovider -n $(WORKERS) --dist worksteal \
		--bench-db $(DB) --bench-budget $(BUDGET) -q -rfE
	$(BIN)/bench report --db $(DB)
	@echo
	@echo "Browse the results:  $(BIN)/bench serve $(DB)    (then open http://127.0.0.1:8001)"

evidence: $(STAMP)
	$(BIN)/python -m pytest $(EVIDENCE_SUITES) -p no:cacheprovider -n $(WORKERS) --dist worksteal \
		--bench-db $(EVIDENCE_DB) --bench-budget cpu -q -rfE
	$(BIN)/bench claims --db $(EVIDENCE_DB) --tier cpu
	$(BIN)/bench claims --db $(EVIDENCE_DB) --tier cpu --no-write --format md --out $(EVIDENCE_MD)

test: $(TEST_STAMP)
	@$(MAKE) --no-print-directory lint
	$(BIN)/python -m pytest tests -p no:cacheprovider -n $(WORKERS) -q -rfEs
	@$(MAKE) --no-print-directory smoke-gate

# Seconds: ruff's lint and format check, then mypy over bench/ and methods/ (config in pyproject.toml).
lint: $(TEST_STAMP)
	$(BIN)/ruff check -q $(LINT_PATHS)
	$(BIN)/ruff format --check -q $(LINT_PATHS)
	$(BIN)/mypy

# The smoke suites into a fresh $(SMOKE_DB), with fresh caches unless SMOKE_KEEP_CACHE=1.
smoke-run: $(STAMP)
	@mkdir -p $(dir $(SMOKE_DB)) && rm -f $(SMOKE_DB) $(SMOKE_DB)-wal $(SMOKE_DB)-shm
	@test -n "$(SMOKE_KEEP_CACHE)" || rm -rf $(SMOKE_CACHE)
	env $(UNPIN) $(SMOKE_PINS) BENCH_CACHE_DIR=$(abspath $(SMOKE_CACHE)) \
		$(BIN)/python -m pytest $(SUITES) -p no:cacheprovider -n $(WORKERS) --dist worksteal \
		--bench-budget smoke --bench-threads $(SMOKE_THREADS) -q -rfE \
		--bench-db $(SMOKE_DB) --bench-tag $(SMOKE_TAG) $(SMOKE_ARGS)

# Run the smoke suites into a fresh $(CI_DB), then gate the newest row of every cell against the
# committed reference: exit 1 when a cell regressed (the gate's table says which), 2 when the runs
# are not comparable. The gate runs even when a cell failed, so its table shows the failure.
smoke-gate: $(STAMP)
	@$(MAKE) --no-print-directory smoke-run SMOKE_DB=$(CI_DB) SMOKE_TAG=ci; suites=$$?; \
	$(BIN)/bench gate --baseline $(REFERENCE) --candidate $(CI_DB):cells --config $(GATE_CONFIG); gate=$$?; \
	test $$suites -eq 0 && test $$gate -eq 0

# Refresh the committed reference (about an hour on 2 cores): the smoke suites, then reruns under
# perturbations of the same arithmetic (busy cores, shuffled order) and of another arithmetic
# (2 threads, the default/SSE4.1 ISA, the native ISA), whose per-cell deltas become the noise
# model stored in the file. Review the diff, then commit it.
reference: $(STAMP)
	$(BIN)/python benchmarks/gate_noise.py calibrate --out $(REFERENCE) --config $(GATE_CONFIG)

# The gate's false-alarm and catch rates: perturbed reruns gated against the committed reference,
# and injected regressions (about 40 minutes on 2 cores; prints the table).
gate-noise: $(STAMP)
	$(BIN)/python benchmarks/gate_noise.py false-alarms --reference $(REFERENCE) --config $(GATE_CONFIG)

# The GPU check (benchmarks/gpu_check.py): every CUDA path in one command, at most 8 minutes on one
# H200, figures as JSON and summary.md under $(GPU_CHECK_OUT). It runs with the node's own Python
# and torch ($(GPU_PYTHON)); the project's other dependencies come from $(WHEELS) when that folder
# holds wheels (`make gpu-wheels` on a machine with network), installed without an index.
GPU_CHECK_OUT  ?= gpu-check
GPU_CHECK_ARGS ?=
GPU_PYTHON     ?= python3
WHEELS         ?= .whl
gpu-check:
	@if ls $(WHEELS)/*.whl >/dev/null 2>&1; then \
		$(GPU_PYTHON) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
			--target $(WHEELS)-site $(WHEELS)/*.whl; fi
	PYTHONPATH=$(CURDIR)/$(WHEELS)-site:$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} \
		$(GPU_PYTHON) benchmarks/gpu_check.py --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

# Wheels of the project's dependencies that the GPU node's image lacks, for its Python (3.12).
gpu-wheels: $(STAMP)
	$(BIN)/python benchmarks/gpu_wheels.py --dest $(WHEELS) --python-version 3.12

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks .bench build *.egg-info
