# lit_rl: thin wrappers over the `lit-rl` Lightning CLI. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU wheel of torch; GPU machines: TORCH_SPEC="torch==2.13.0 --index-url <your CUDA wheel index>"
TORCH_SPEC ?= torch==2.13.0

METHOD ?= ewc
ENV ?= apple
SEED ?= 0
STEPS ?=
DEVICES ?= 1
RESUME ?=
LOGGER ?= neptune
CKPT ?=

METHODS := $(sort $(basename $(notdir $(wildcard configs/method/*.yaml))))
ENVS := $(sort $(basename $(notdir $(wildcard configs/env/*.yaml))))
method_list := $(subst +, ,$(METHOD))
bad_methods := $(filter-out $(METHODS),$(method_list))

RUN_CONFIGS = --config configs/base.yaml --config configs/env/$(ENV).yaml
TRAINER_CONFIGS = --config configs/trainer/cpu.yaml \
	$(if $(filter-out 1,$(DEVICES)),--config configs/trainer/ddp.yaml --trainer.devices $(DEVICES)) \
	--config configs/logger/$(LOGGER).yaml
COMMON_ARGS = --seed_everything $(SEED) $(if $(STEPS),--model.budget_frames $(STEPS)) \
	$(if $(RESUME),--ckpt_path last)
PRETRAINED := pretrained/$(ENV).pt

.PHONY: help install finetune pretrain eval report test test-slow lint format bench

help: ## list the targets and variables
	@echo "lit_rl — fine-tune pre-trained RL policies without forgetting"
	@echo
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo
	@echo "Variables: METHOD=$(METHOD) (one of: $(METHODS); combine with +, e.g. bc+ks)"
	@echo "           ENV=$(ENV) (one of: $(ENVS))  SEED=$(SEED)  STEPS=<env frames>  DEVICES=$(DEVICES)"
	@echo "           RESUME=1 (continue the run from its last checkpoint)  LOGGER=$(LOGGER)|csv  CKPT=<path>"

# Checked when the Makefile is read, so a typo fails at once with one line and a non-zero exit.
ifneq ($(filter finetune pretrain eval,$(MAKECMDGOALS)),)
ifeq ($(wildcard configs/env/$(ENV).yaml),)
$(error unknown ENV '$(ENV)': choose one of: $(ENVS))
endif
endif
ifneq ($(filter finetune,$(MAKECMDGOALS)),)
ifneq ($(bad_methods)$(if $(method_list),,empty),)
$(error unknown METHOD '$(METHOD)': choose from $(METHODS) (combine with +, e.g. bc+ks))
endif
endif

install: $(STAMP) ## create the virtualenv and install lit_rl (idempotent)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

$(PRETRAINED):
	$(MAKE) --no-print-directory pretrain ENV=$(ENV) SEED=$(SEED)

pretrain: install ## pre-train π* for ENV (its FAR subspace) → pretrained/<env>.pt
	$(BIN)/lit-rl fit $(RUN_CONFIGS) --config configs/pretrain/$(ENV).yaml $(TRAINER_CONFIGS) \
		--seed_everything $(SEED) $(if $(RESUME),--ckpt_path last)
	@echo "pre-trained policy: $(PRETRAINED)"

finetune: install ## fine-tune π* with METHOD on ENV, evaluating CLOSE and FAR
	@test -f $(PRETRAINED) || $(MAKE) --no-print-directory pretrain ENV=$(ENV) SEED=$(SEED)
	$(BIN)/lit-rl fit $(RUN_CONFIGS) $(foreach m,$(filter-out none,$(method_list)),--config configs/method/$(m).yaml) \
		$(TRAINER_CONFIGS) $(COMMON_ARGS)
	@echo "results: runs/$(ENV)-$(subst $() ,+,$(or $(filter-out none,$(method_list)),none))-s$(SEED)/summary.json  (compare runs: make report)"

eval: install ## evaluate a checkpoint on CLOSE and FAR: make eval CKPT=runs/…/checkpoints/last.ckpt
	@test -n "$(CKPT)" || { echo "error: set CKPT=<checkpoint path>, e.g. runs/apple-ewc-s0/checkpoints/last.ckpt" >&2; exit 2; }
	$(BIN)/lit-rl validate $(RUN_CONFIGS) --config configs/trainer/cpu.yaml --config configs/logger/csv.yaml \
		--model.pretrained null --ckpt_path $(CKPT)

report: install ## aggregate runs/*/summary.json → reports/report.md and PNG plots
	$(BIN)/python -m lit_rl.report --runs runs --out reports

test: install ## run the test suite (slow runs excluded)
	$(BIN)/pytest -q

test-slow: install ## run only the long tests
	$(BIN)/pytest -q -m slow

lint: install ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## apply ruff formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install ## throughput benchmarks → bench/results.json and bench/results.md
	$(BIN)/python -m bench.run
