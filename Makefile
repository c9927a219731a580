# Every target installs what it needs first (idempotent): a fresh clone needs nothing else.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
FIG     ?=
ARGS    ?=
SMOKE   := scale=smoke paths.output_dir=outputs/smoke train.progress=false
SHORT   := train.epochs=3000 train.log_every=1000 train.checkpoint_every=1000

JOBS    ?= $(shell nproc)

.PHONY: install test smoke reproduce reproduce-fig2 sweep-eps sweep-init clean-smoke

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest

# Every figure from tiny configs: synthetic stand-ins for CIFAR-10, shortened toys (outputs/smoke/figures).
smoke: install
	$(PY) -m pexp.figures fig=richness-fig2 data=synthetic_cifar2 $(SMOKE) $(ARGS)
	OMP_NUM_THREADS=1 $(PY) -m pexp.figures fig=pe-fig1 $(SMOKE) $(SHORT) $(ARGS)
	OMP_NUM_THREADS=1 $(PY) -m pexp.figures fig=pe-fig2 $(SMOKE) $(SHORT) $(ARGS)
	for fig in offmanifold-fig2 offmanifold-fig6; do \
		OMP_NUM_THREADS=1 $(PY) -m pexp.figures fig=$$fig $(SMOKE) train.epochs=1000 $(ARGS) || exit 1; done
	for fig in offmanifold-fig3 offmanifold-fig5; do \
		OMP_NUM_THREADS=1 $(PY) -m pexp.figures fig=$$fig $(SMOKE) train.epochs=300 eval.surface_grid=11 $(ARGS) || exit 1; done
	$(PY) -m pexp.figures fig=offmanifold-fig1 synthetic=true $(SMOKE) $(ARGS)
	$(PY) -m pexp.figures fig=offmanifold-fig4 synthetic=true $(SMOKE) model.widths=[64,64] train.epochs=3 \
		eval.n_points=20 eval.resolution=0.05 $(ARGS)
	for fig in pe-fig4 pe-fig5 pe-fig6 richness-fig1; do \
		$(PY) -m pexp.figures fig=$$fig data=synthetic_cifar2 $(SMOKE) $(ARGS) || exit 1; done

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

# offmanifold-fig4's runs as a Hydra multirun over the first layer's init factor (both data sets), run in parallel
# by the joblib launcher (one thread per job); the figure then finds them by config.
FACTORS ?= 1,2,4,8,16,32
sweep-init: install
	OMP_NUM_THREADS=1 $(PY) -m pexp.train -m experiment=om_fig4_sphere,om_fig4_mnist init.factor=$(FACTORS) \
		hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS) train.progress=false $(ARGS)
	$(PY) -m pexp.figures fig=offmanifold-fig4 $(ARGS)

clean-smoke:
	rm -rf outputs/smoke
