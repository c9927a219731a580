# Every target installs what it needs first (idempotent): a fresh clone needs nothing else.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
FIG     ?=
ARGS    ?=
SMOKE   := scale=smoke paths.output_dir=outputs/smoke train.progress=false
SHORT   := train.epochs=3000 train.log_every=1000 train.checkpoint_every=1000
TS_SMOKE := train.epochs=3 eval.n_train=200 eval.n_test=200

JOBS    ?= $(shell nproc)

.PHONY: install test smoke reproduce reproduce-fig2 sweep-eps clean-smoke

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest

# Every figure from tiny configs: synthetic stand-ins for CIFAR-10 / MNIST, shortened toys (outputs/smoke/figures).
smoke: install
	$(PY) -m pexp.figures fig=richness-fig2 data=synthetic_cifar2 $(SMOKE) $(ARGS)
	OMP_NUM_THREADS=1 $(PY) -m pexp.figures fig=pe-fig1 $(SMOKE) $(SHORT) $(ARGS)
	OMP_NUM_THREADS=1 $(PY) -m pexp.figures fig=pe-fig2 $(SMOKE) $(SHORT) $(ARGS)
	for fig in offmanifold-fig2 offmanifold-fig6; do \
		OMP_NUM_THREADS=1 $(PY) -m pexp.figures fig=$$fig $(SMOKE) train.epochs=1000 $(ARGS) || exit 1; done
	for fig in pe-fig4 pe-fig5 pe-fig6 richness-fig1; do \
		$(PY) -m pexp.figures fig=$$fig data=synthetic_cifar2 $(SMOKE) $(ARGS) || exit 1; done
	for fig in tangent-fig1 tangent-fig2 tangent-fig3 tangent-fig4 tangent-table2; do \
		OMP_NUM_THREADS=1 $(PY) -m pexp.figures fig=$$fig data=synthetic_cifar10 $(SMOKE) $(TS_SMOKE) $(ARGS) || exit 1; done

reproduce: install
	@test -n "$(FIG)" || (echo "usage: make reproduce FIG=<figure id>   (ids: python -m pexp.figures --list)"; exit 2)
	$(PY) -m pexp.figures fig=$(FIG) $(ARGS)

reproduce-fig2: install
	$(PY) -m pexp.figures fig=richness-fig2 $(ARGS)

# pe-fig5's runs as a Hydra multirun over eps, run in parallel by the joblib launcher (one thread per job);
# then `make reproduce FIG=pe-fig5` finds them by config.
sweep-eps: install
	OMP_NUM_THREADS=1 $(PY) -m pexp.train -m experiment=pe_alg1 perturb.eps=0.005,0.01,0.02 \
		hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS) train.progress=false $(ARGS)
	$(PY) -m pexp.figures fig=pe-fig5 $(ARGS)

clean-smoke:
	rm -rf outputs/smoke
