# One command from a fresh clone to a training run (`make train`) and one to green tests (`make test`).
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch. On a GPU machine: make install TORCH="torch==2.11.0" (or whatever CUDA build you use).
TORCH ?= torch==2.13.0
# Optional extras on top, comma-separated: make install EXTRAS=tensorboard (for logger.backend=tensorboard)
EXTRAS ?=
ARGS ?=

.PHONY: install test lint train results clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,ray,offline,box2d]"
	touch $@

install: $(VENV)/.installed
ifneq ($(EXTRAS),)
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
endif

lint: install
	$(VENV)/bin/ruff check torchrl_awr scripts tests

test: lint
	$(PY) -m pytest -q -m "not slow" --doctest-modules torchrl_awr tests

train: install
	$(PY) scripts/train_mujoco.py $(ARGS)

# README's Results table (stdout) and docs/results.png from the committed runs that docs/results.json names
results: install
	$(PY) scripts/results.py $(ARGS)

clean:
	rm -rf $(VENV) outputs
