# Every target installs what it needs first (idempotent): a fresh clone needs nothing else.
VENV    ?= .venv
PY      := $(VENV)/bin/python
# SLURM=1 also installs the slurm extra (hydra-submitit-launcher: hydra/launcher=submitit_slurm | submitit_local,
# and its tests, which are skipped without it).
SLURM   ?=
comma   := ,
EXTRAS  := dev$(if $(SLURM),$(comma)slurm)
STAMP   := $(VENV)/.installed$(if $(SLURM),-slurm)
FIG     ?=
ARGS    ?=

JOBS    ?= $(shell nproc)

# OpenMP threads that busy-wait collapse (up to 10x slower, measured by `make bench`, row 6) when other processes
# share the cores; passive waiting costs little when they do not. Numbers are unchanged. Override from the shell.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: install test test-fast smoke reproduce reproduce-fig2 reproduce-all report browser sweep-eps sweep-init bench clean-smoke runs

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	touch $(STAMP)

test: install
	$(PY) -m pytest

# The quick loop: the suite without the tests marked slow (whole command-line runs, trainings of many seconds).
test-fast: install
	$(PY) -m pytest -m "not slow"

# Every figure from tiny configs: synthetic stand-ins for CIFAR-10, shortened toys (outputs/smoke/figures),
# then the report page outputs/smoke/report/index.html. The per-figure smoke overrides live in the script.
smoke: install
	$(PY) scripts/reproduce_all.py --smoke $(ARGS)

# Every figure pexp.figures.FIGURES knows, then outputs/report/index.html. It prints its plan first (runs reused,
# resumed or trained, and the time this machine recorded for them), resumes an interrupted call (a second call with
# the same ARGS), and ends with one table (<output>/reproduce-all/summary.md). ARGS="--plan": the plan alone;
# ARGS="--figures pe-fig1,pe-fig2": those figures. A failing figure does not stop the others.
reproduce-all: install
	$(PY) scripts/reproduce_all.py $(ARGS)

report: install
	$(PY) -m pexp.report $(ARGS)

# The runs under the output folder: experiment, hash, status, overrides, size, evaluations (python -m pexp.runs);
# ARGS="--prune" removes the partial runs nobody holds (ARGS="--prune --dry-run" only says which).
runs: install
	$(PY) -m pexp.runs $(ARGS)

# Debian's chromium for the browser test of the report page (skipped when present; needs root for apt-get).
browser:
	test -x /usr/bin/chromium || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

reproduce: install
	@test -n "$(FIG)" || (echo "usage: make reproduce FIG=<figure id>   (ids: python -m pexp.figures --list)"; exit 2)
	$(if $(SEEDS),$(PY) -m pexp.figures --train-seeds --jobs=$(JOBS) fig=$(FIG) seeds=[$(SEEDS)] $(ARGS))
	$(PY) -m pexp.figures fig=$(FIG) $(if $(SEEDS),seeds=[$(SEEDS)]) $(ARGS)

# SEEDS=1,2,3 (any margin figure, also with reproduce): the runs of each seed as a Hydra multirun (reused by
# hash), then the figure draws the mean CDF with a min-max band and judges its claims per seed and on the mean.
reproduce-fig2: install
	$(if $(SEEDS),$(PY) -m pexp.figures --train-seeds --jobs=$(JOBS) fig=richness-fig2 seeds=[$(SEEDS)] $(ARGS))
	$(PY) -m pexp.figures fig=richness-fig2 $(if $(SEEDS),seeds=[$(SEEDS)]) $(ARGS)

# pe-fig5's runs as a Hydra multirun over eps, run in parallel by the joblib launcher (one thread per job);
# then `make reproduce FIG=pe-fig5` finds them by config.
sweep-eps: install
	OMP_NUM_THREADS=1 $(PY) -m pexp.train -m experiment=pe_alg1 perturb.eps=0.005,0.01,0.02 \
		hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS) train.progress=false $(ARGS)
	$(PY) -m pexp.figures fig=pe-fig5 $(ARGS)

# offmanifold-fig4's runs: per data set a Hydra multirun over the first layer's init factor and the seed, run in
# parallel by the joblib launcher (one thread per job). The grid is each experiment's `sweep` (factors 0.5..7 /
# 0.2..7, seeds 1-5) unless FACTORS / SEEDS (comma lists) are given; the figure then draws every finished run of
# the sweep it finds, whatever its factors.
FACTORS ?=
SEEDS   ?=
SWEEP    = $(PY) -c "import sys; from pexp.figures.compose import compose_experiment; s = compose_experiment(sys.argv[1]).sweep; print(','.join(map(str, s[sys.argv[2]])))"
sweep-init: install
	for experiment in om_fig4_sphere_authors om_fig4_mnist; do \
		factors="$(FACTORS)"; seeds="$(SEEDS)"; \
		test -n "$$factors" || factors=$$($(SWEEP) $$experiment factors); \
		test -n "$$seeds" || seeds=$$($(SWEEP) $$experiment seeds); \
		OMP_NUM_THREADS=1 $(PY) -m pexp.train -m experiment=$$experiment init.factor=$$factors seed=$$seeds \
			hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS) train.progress=false $(ARGS) || exit $$?; \
	done
	$(PY) -m pexp.figures fig=offmanifold-fig4 $(ARGS)

# Speed of the batched pieces against their references (benchmarks/bench.py): one table + outputs/bench/bench.json
# (~10 min here); ARGS="--quick" for seconds, ARGS="--full-e2e" to time make reproduce-fig2 from scratch (see --help).
bench: install
	$(PY) benchmarks/bench.py $(ARGS)

clean-smoke:
	rm -rf outputs/smoke
