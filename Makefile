# Every target installs what it needs first (idempotent): a fresh clone needs nothing else.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
FIG     ?=
ARGS    ?=
SMOKE   := data=synthetic_cifar2 scale=smoke paths.output_dir=outputs/smoke

.PHONY: install test smoke reproduce reproduce-fig2 clean-smoke

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest

smoke: install
	$(PY) -m pexp.figures fig=richness-fig2 $(SMOKE) $(ARGS)

reproduce: install
	@test -n "$(FIG)" || (echo "usage: make reproduce FIG=<figure id>   (ids: python -m pexp.figures --list)"; exit 2)
	$(PY) -m pexp.figures fig=$(FIG) $(ARGS)

reproduce-fig2: install
	$(PY) -m pexp.figures fig=richness-fig2 $(ARGS)

clean-smoke:
	rm -rf outputs/smoke
