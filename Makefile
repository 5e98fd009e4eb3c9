# The two commands: `make bench` (default suites -> results.db -> summary) and `make test`
# (unit tests, then the smoke suites gated against the committed reference).
# Both bootstrap .venv on first use and reinstall when pyproject.toml changes.
# `make reference` re-runs the smoke suites and refreshes suites/reference/smoke.json.
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
# The smoke gate: a scratch database (*.db is gitignored), the committed reference and its tolerances.
CI_DB       ?= .bench/ci.db
REF_DB      ?= .bench/reference.db
REFERENCE   ?= suites/reference/smoke.json
GATE_CONFIG ?= suites/reference/gate.toml
# The smoke suites as both the reference and the CI gate run them. One torch thread per
# worker whatever the core count, and every CPU math library pinned to the AVX2 code path
# (ATen kernels, oneDNN convolutions, MKL's conditional numerical reproducibility), so the
# arithmetic, and every accuracy, is the same on any AVX2 machine as in the reference,
# whatever wider instructions (AVX-512, AMX) the machine also has.
SMOKE_ENV = ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2
SMOKE_RUN = $(SMOKE_ENV) $(BIN)/python -m pytest $(SUITES) -p no:cacheprovider -n $(WORKERS) --dist worksteal \
	--bench-budget smoke --bench-threads 1 -q -rfE

.PHONY: bench test smoke-gate reference venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if [ -n "$(TORCH_SPEC)" ]; then $(BIN)/python -m pip install -q $(TORCH_SPEC); fi
	$(BIN)/python -m pip install -q -e .
	@touch $(STAMP)

bench: $(STAMP)
	$(BIN)/python -m pytest $(SUITES) -p no:cacheprovider -n $(WORKERS) --dist worksteal \
		--bench-db $(DB) --bench-budget $(BUDGET) -q -rfE
	$(BIN)/bench report --db $(DB)
	@echo
	@echo "Browse the results:  $(BIN)/bench serve $(DB)    (then open http://127.0.0.1:8001)"

test: $(STAMP)
	$(BIN)/python -m pytest tests -p no:cacheprovider -n $(WORKERS) -q -rfEs
	@$(MAKE) --no-print-directory smoke-gate

# Run the smoke suites into a fresh $(CI_DB), then gate it against the committed reference:
# exit 1 when a cell regressed (the gate's table says which), 2 when the runs are not comparable.
# The gate runs even when a cell failed, so its table shows the failure beside the rest.
smoke-gate: $(STAMP)
	@mkdir -p $(dir $(CI_DB)) && rm -f $(CI_DB) $(CI_DB)-wal $(CI_DB)-shm
	$(SMOKE_RUN) --bench-db $(CI_DB) --bench-tag ci; suites=$$?; \
	$(BIN)/bench gate --baseline $(REFERENCE) --candidate $(CI_DB):latest --config $(GATE_CONFIG); gate=$$?; \
	test $$suites -eq 0 && test $$gate -eq 0

# Refresh the committed reference from a fresh smoke run (review the diff, then commit it).
reference: $(STAMP)
	@mkdir -p $(dir $(REF_DB)) && rm -f $(REF_DB) $(REF_DB)-wal $(REF_DB)-shm
	$(SMOKE_RUN) --bench-db $(REF_DB) --bench-tag reference
	$(BIN)/bench reference export --db $(REF_DB) --run tag:reference --config $(GATE_CONFIG) -o $(REFERENCE)

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks .bench build *.egg-info
