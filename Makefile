# normbench: `make install`, `make test`, `make bench`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RESULTS ?= runs
EXTRAS ?= test
JOBS ?= 1

.PHONY: install test test-slow test-all bench report smoke check baseline papers papers-report perf perf-grid full-report norms norms-report tuned tuned-report cifar-resnet-cpu cifar-resnet-cpu-report diagnostics diagnostics-report overhead tf-input diagnostics-overhead gpu-bench gpu-bench-tiny gpu-wheels clean

$(BIN)/normbench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(BIN)/normbench

# The fast tier (about 8 minutes on 2 cores): every module, every registered model and strategy built once.
test: install
	$(BIN)/python -m pytest -q -m "not slow" --durations=15

# The slow tier alone: other backends' numerical checks, grids of runs in worker processes, signals, the rest of
# the registry cross product (tests marked `slow`, see tests/_tiers.py).
test-slow: install
	$(BIN)/python -m pytest -q -m slow

# Every test, as CI runs them: the fast tier, then the slow one (each prints its own time).
test-all: test test-slow

# The main job: the `bench` suite (the published tuned study cut to batchnorm, maxnorm, selu and none on mlp8, under
# the same search protocol; 95 runs, about 5 minutes on 2 cores), trained into $(RESULTS)/bench (untracked; resumes if
# interrupted), reported into $(RESULTS)/bench/report, ending with each cell against results/tuned's published one.
bench: install
	$(BIN)/normbench run --suite bench --results $(RESULTS)/bench --jobs auto
	$(BIN)/normbench report --results $(RESULTS)/bench --out $(RESULTS)/bench/report --published results/tuned/records

report: install
	$(BIN)/normbench report --results $(RESULTS)/bench --out $(RESULTS)/bench/report --published results/tuned/records

# The `full` suite's published report, rebuilt from its committed compact records (no GPU needed).
full-report: install
	$(BIN)/normbench report --results results/full/records --out results/full

# A published CPU suite SUITE: train into $(RESULTS)/SUITE, pack the records into results/SUITE/records,
# report into results/SUITE; SUITE-report rebuilds the report from the committed pack alone.
define publish
	$(BIN)/normbench run --suite $(1) --results $(RESULTS)/$(1) --jobs $(JOBS)
	$(BIN)/normbench pack --results $(RESULTS)/$(1) --out results/$(1)/records
	$(call report_pack,$(1))
endef
define report_pack
	$(BIN)/normbench report --results results/$(1)/records --out results/$(1)
endef

# Every strategy (norms suite, about an hour on 2 CPU cores).
norms: install
	$(call publish,norms)

norms-report: install
	$(call report_pack,norms)

# The fair comparison: every strategy's learning rate tuned on validation accuracy, then 5 seeds (tuned suite,
# about an hour on 2 CPU cores with --jobs auto); tuned-report rebuilds its report from the committed pack.
tuned: JOBS = auto
tuned: install
	$(call publish,tuned)

tuned-report: install
	$(call report_pack,tuned)

# He et al.'s CIFAR-10 recipe compressed to this CPU (cifar-resnet-cpu, about 50 minutes), the same way.
cifar-resnet-cpu: install
	$(call publish,cifar-resnet-cpu)

cifar-resnet-cpu-report: install
	$(call report_pack,cifar-resnet-cpu)

smoke: install
	$(BIN)/normbench run --suite smoke --results $(RESULTS)/smoke

# Throughput against plain Keras model.fit; writes results/perf.md and results/perf.csv.
perf: install
	$(BIN)/python benchmarks/throughput.py --out results

# A suite's wall time at --jobs 1, 2, 4, ... and the projection for `full`; the grid section of results/perf.md.
perf-grid: install
	$(BIN)/python benchmarks/grid.py --out results

# One GPU machine, one command (docs/gpu.md): throughput rows, --jobs, seeds as one program and as much of `full`
# as fits in 9 minutes, under $(RESULTS)/gpu/gpu-<device>. There is no venv on a device machine: give it its Python,
# e.g. `make gpu-bench GPU_PYTHON=python3`. gpu-bench-tiny is the same at sizes of seconds on this CPU (CI runs it).
GPU_PYTHON ?= $(BIN)/python
gpu-bench:
	$(GPU_PYTHON) benchmarks/gpu.py --out $(RESULTS)/gpu

gpu-bench-tiny: install
	$(BIN)/python benchmarks/gpu.py --tiny --out $(RESULTS)/gpu

# What a device machine lacks, into the ignored folder .gpu/ that a `run` call carries: this venv's Keras, namex and
# optree as CPython 3.12 x86-64 wheels (the machine has no package registry) and mnist.npz (docs/gpu.md).
GPU_WHEELS := keras namex optree
gpu-wheels: install
	rm -rf .gpu/wheels .gpu/data && mkdir -p .gpu/wheels .gpu/data
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 \
	  --platform manylinux_2_28_x86_64 -d .gpu/wheels \
	  $$($(BIN)/python -c "from importlib.metadata import version; print(*(f'{n}=={version(n)}' for n in '$(GPU_WHEELS)'.split()))")
	cp "$${NORMBENCH_DATA_DIR:?set NORMBENCH_DATA_DIR to the folder holding mnist.npz}/mnist.npz" .gpu/data/
	du -sh .gpu/wheels .gpu/data

# Cost of the activation statistics relative to an epoch (prints numbers).
overhead: install
	$(BIN)/python benchmarks/stats_overhead.py

# TensorFlow: the fit engine's own input pipeline against the autotuned one fit builds from arrays (prints numbers).
tf-input: install
	$(BIN)/python benchmarks/tf_input.py

# What each diagnostic costs against training at the standard suite's sizes (prints numbers)
diagnostics-overhead: install
	$(BIN)/python benchmarks/diagnostics_overhead.py

# Every diagnostic on the five original strategies (diagnostics suite, about 1.5 hours on 2 CPU cores).
diagnostics: install
	$(call publish,diagnostics)

diagnostics-report: install
	$(call report_pack,diagnostics)

# Paper replications (CPU-sized suites, about 1.5 hours on 2 CPU cores): run, pack each suite's records into
# results/papers/SUITE, then results/papers.md; papers-report rebuilds papers.md from the committed packs alone.
PAPER_SUITES := paper-bn paper-maxnorm paper-snn
papers: install
	$(foreach s,$(PAPER_SUITES),$(BIN)/normbench run --suite $(s) --results $(RESULTS)/$(s) && \
	  $(BIN)/normbench pack --results $(RESULTS)/$(s) --out results/papers/$(s) &&) true
	$(BIN)/normbench report --papers results/papers --out results

papers-report: install
	$(BIN)/normbench report --papers results/papers --out results

# CI's regression guard: the smoke suite against the committed baseline.
check: smoke
	$(BIN)/normbench check --baseline results/baseline --current $(RESULTS)/smoke

# Refresh the committed baseline deliberately; say why in the commit message.
baseline: install
	rm -f results/baseline/*.json
	$(BIN)/normbench run --suite smoke --results results/baseline

clean:
	rm -rf $(RESULTS) .pytest_cache
