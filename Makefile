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

ENVS := $(sort $(basename $(notdir $(wildcard configs/env/*.yaml))))
# A paper preset (`nethack_paper`) overlays its CPU preset (`nethack`): only what differs is in it.
ENV_BASE = $(firstword $(subst _, ,$(ENV)))
# The methods ENV offers: the generic ones plus its scenario's and its preset's own (configs/method/<env>/).
# Off-policy scenarios (SAC) take only their own methods (and none): the generic ones are PPO's.
OWN_METHODS_ONLY := robotic
GENERIC_METHODS = $(if $(filter $(ENV_BASE),$(OWN_METHODS_ONLY)),configs/method/none.yaml,configs/method/*.yaml)
METHODS = $(sort $(basename $(notdir $(wildcard $(GENERIC_METHODS) configs/method/$(ENV_BASE)/*.yaml configs/method/$(ENV)/*.yaml))))
method_list := $(subst +, ,$(METHOD))
bad_methods := $(filter-out $(METHODS),$(method_list))
# A method's settings: the preset's own file, else its scenario's, else the generic one.
method_config = $(firstword $(wildcard configs/method/$(ENV)/$(1).yaml configs/method/$(ENV_BASE)/$(1).yaml) configs/method/$(1).yaml)

RUN_CONFIGS = --config configs/base.yaml $(if $(filter-out $(ENV),$(ENV_BASE)),--config configs/env/$(ENV_BASE).yaml) \
	--config configs/env/$(ENV).yaml
TRAINER_CONFIGS = --config configs/trainer/cpu.yaml \
	$(if $(filter-out 1,$(DEVICES)),--config configs/trainer/ddp.yaml --trainer.devices $(DEVICES)) \
	--config configs/logger/$(LOGGER).yaml
COMMON_ARGS = --seed_everything $(SEED) $(if $(STEPS),--model.budget.frames $(STEPS)) \
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
	$(BIN)/lit-rl fit $(RUN_CONFIGS) $(foreach m,$(filter-out none,$(method_list)),--config $(call method_config,$(m))) \
		$(TRAINER_CONFIGS) $(COMMON_ARGS)

# A checkpoint inside a run folder is evaluated with that run's own config.yaml (same model, same
# evaluator), so the numbers reproduce the run's summary.json; elsewhere ENV's configs are used.
RUN_OF_CKPT = $(wildcard $(dir $(CKPT))../config.yaml)
eval: install ## evaluate a checkpoint on CLOSE and FAR: make eval CKPT=runs/…/checkpoints/last.ckpt
	@test -n "$(CKPT)" || { echo "error: set CKPT=<checkpoint path>, e.g. runs/apple-ewc-s0/checkpoints/last.ckpt" >&2; exit 2; }
	$(BIN)/lit-rl validate $(if $(RUN_OF_CKPT),--config $(RUN_OF_CKPT) --trainer.devices 1 --trainer.strategy auto,\
		$(RUN_CONFIGS) --model.pretrained null --config configs/trainer/cpu.yaml) \
		--config configs/logger/csv.yaml --ckpt_path $(CKPT)

report: install ## aggregate runs/*/summary.json → reports/report.md and PNG plots
	$(BIN)/python -m lit_rl.figures.report --runs runs --out reports

test: install ## run the test suite (slow runs excluded)
	$(BIN)/pytest -q

test-slow: install ## run only the long tests
	$(BIN)/pytest -q -m slow

lint: install ## ruff lint and format check; import-linter: the layers point one way (pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install ## apply ruff formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install ## throughput benchmarks → bench/results.json and bench/results.md
	$(BIN)/python -m bench.run

# --- Montezuma's Revenge (docs/montezuma.md) ---------------------------------------------------
MONTEZUMA_POOL ?= pools/montezuma_room7.pt
MONTEZUMA_DEMOS ?= data/montezuma_demos
MONTEZUMA_BC ?= data/montezuma_bc
MONTEZUMA_PISTAR ?= pretrained/montezuma.pt

.PHONY: montezuma-pool montezuma-demos montezuma-pistar montezuma-pretrained montezuma-bc-data montezuma-demo

ifneq ($(filter montezuma%,$(ENV)),)
pretrain finetune eval: $(MONTEZUMA_POOL)
endif
# `make finetune ENV=montezuma` clones π* from the explorer's demonstrations when it is missing
# (`make pretrain ENV=montezuma`, the paper's PPO + RND from Room 7, learns too little here).
ifeq ($(ENV),montezuma)
finetune: montezuma-pretrained
endif

$(MONTEZUMA_POOL):
	$(MAKE) --no-print-directory montezuma-pool

montezuma-pretrained:
	@test -f $(MONTEZUMA_PISTAR) || $(MAKE) --no-print-directory montezuma-pistar

montezuma-pool: install ## Montezuma: explore to Room 7 and save its start states (FAR) → pools/
	$(BIN)/python -m lit_rl.experts.montezuma_explorer build --rooms 7 --seed 2 --frames 6000000 \
		--stop-at-cells 20 --out $(MONTEZUMA_POOL)
	$(BIN)/python -m lit_rl.experts.montezuma_explorer info $(MONTEZUMA_POOL)

montezuma-demos: install $(MONTEZUMA_POOL) ## Montezuma: the explorer's successful Room-7 trajectories → data/
	$(BIN)/python -m lit_rl.experts.montezuma_demos --pool $(MONTEZUMA_POOL) --per-state 8 \
		--seed $(SEED) --out $(MONTEZUMA_DEMOS)

montezuma-pistar: install $(MONTEZUMA_POOL) ## Montezuma: π* cloned from the demonstrations (+ DAgger) → pretrained/
	@test -f $(MONTEZUMA_DEMOS)/meta.json || $(MAKE) --no-print-directory montezuma-demos
	$(BIN)/python -m lit_rl.pretraining.montezuma_clone --demos $(MONTEZUMA_DEMOS) --pool $(MONTEZUMA_POOL) \
		--rounds 3 --seed $(SEED) --data-out $(MONTEZUMA_BC) --out $(MONTEZUMA_PISTAR)

# The paper preset's BC data: > 500 episodes of its π* (trained on a GPU machine).
montezuma-bc-data: install $(MONTEZUMA_POOL) ## Montezuma paper preset: record 512 episodes of π* → data/
	@test -f pretrained/montezuma_paper.pt || { echo "error: pretrained/montezuma_paper.pt missing: make pretrain ENV=montezuma_paper (GPU)" >&2; exit 2; }
	$(BIN)/python -m lit_rl.recording.montezuma_bc --policy pretrained/montezuma_paper.pt --pool $(MONTEZUMA_POOL) \
		--episodes 512 --max-episode-steps 4500 --out data/montezuma_paper_bc

montezuma-demo: install montezuma-pretrained ## Montezuma: pool → demonstrations → π* → fine-tune none/BC/EWC
	$(MAKE) --no-print-directory finetune ENV=montezuma METHOD=bc SEED=$(SEED) LOGGER=$(LOGGER)
	$(MAKE) --no-print-directory finetune ENV=montezuma METHOD=ewc SEED=$(SEED) LOGGER=$(LOGGER)
	$(MAKE) --no-print-directory finetune ENV=montezuma METHOD=none SEED=$(SEED) LOGGER=$(LOGGER)
	$(MAKE) --no-print-directory report
	$(BIN)/python -m lit_rl.figures.montezuma --runs runs/montezuma-*-s* --out reports

# --- NetHack chain: record → behavioural cloning → fine-tune → evaluate (docs/nethack.md) -----
GAMES ?= 16
GAME_STEPS ?= 2000
FAR_DEPTHS ?= 2,4
FAR_COUNT ?= 8
FAR_ATTEMPTS ?=
BC_STEPS ?=
NETHACK_DEMO_METHOD = $(if $(filter command line environment,$(origin METHOD)),$(METHOD),ks)

.PHONY: data nethack-pretrain nethack-pretrained nethack-paper-pretrained nethack-demo

# `make finetune ENV=nethack` builds π* by behavioural cloning when pretrained/nethack.pt is missing
# (the generic `make pretrain` trains by RL and does not apply to NetHack).
ifeq ($(ENV),nethack)
finetune: nethack-pretrained
endif

nethack-pretrained:
	@test -f pretrained/nethack.pt || $(MAKE) --no-print-directory nethack-pretrain SEED=$(SEED)

# The paper preset starts from Tuyls et al.'s released π*, which cannot be trained here: convert it.
ifeq ($(ENV),nethack_paper)
finetune: nethack-paper-pretrained
endif

nethack-paper-pretrained:
	@test -f pretrained/nethack_paper.pt || { echo "error: pretrained/nethack_paper.pt is missing: convert model_115.tar with python -m lit_rl.models.model115 model_115.tar --out pretrained/nethack_paper.pt --size paper (docs/nethack.md)" >&2; exit 2; }

data: install ## record expert games (NLD layout) + FAR start states: make data ENV=nethack GAMES=16 (FAR_DEPTHS=4,8,sokoban)
	@test "$(ENV)" = nethack || { echo "error: make data records NetHack only: use ENV=nethack" >&2; exit 2; }
	$(BIN)/python -m lit_rl.recording.nethack_games --games $(GAMES) --out data/nethack --seed $(SEED) \
		--far-depths $(FAR_DEPTHS) --far-count $(FAR_COUNT) --max-steps $(GAME_STEPS) \
		$(if $(FAR_ATTEMPTS),--far-attempts $(FAR_ATTEMPTS))

nethack-pretrain: install ## behavioural cloning of data/nethack → pretrained/nethack.pt
	@test -d data/nethack || $(MAKE) --no-print-directory data ENV=nethack SEED=$(SEED)
	$(BIN)/lit-rl fit --config configs/pretrain/nethack.yaml \
		--seed_everything $(SEED) $(if $(BC_STEPS),--trainer.max_steps $(BC_STEPS))

nethack-demo: install ## the whole small NetHack chain on CPU (data, BC π*, fine-tune with METHOD, report)
	@test -f pretrained/nethack.pt || $(MAKE) --no-print-directory nethack-pretrain SEED=$(SEED) BC_STEPS=$(or $(BC_STEPS),300)
	$(MAKE) --no-print-directory finetune ENV=nethack METHOD=$(NETHACK_DEMO_METHOD) SEED=$(SEED) LOGGER=csv $(if $(STEPS),STEPS=$(STEPS))
	$(MAKE) --no-print-directory report

# The laptop studies, resumable (rerun to continue), everything under studies/<env>/:
#  ENV=nethack (issue 15, docs/nethack.md): record → BC π* → Dlvl-4 states → none/bc/ks/ewc × 2 seeds
#  ENV=minihack (issue 23, docs/minihack.md): FAR hand-overs → RL π* → none/ks/bc/ewc × 3 seeds
#  → random-policy reference → report.
STUDY_ENVS := nethack minihack
STUDY ?= configs/study/$(ENV).yaml
.PHONY: study

study: install ## laptop study, resumable: make study ENV=nethack|minihack [STUDY=configs/study/<env>.yaml]
	@test -n "$(filter $(ENV),$(STUDY_ENVS))" || { echo "error: make study runs ENV=nethack or ENV=minihack, not '$(ENV)'" >&2; exit 2; }
	$(BIN)/python -m lit_rl.study --config $(STUDY)

ifeq ($(ENV),nethack)
ifneq ($(filter pretrain,$(MAKECMDGOALS)),)
$(error ENV=nethack pre-trains π* by behavioural cloning: run `make nethack-pretrain` (see docs/nethack.md))
endif
endif

# --- AppleRetrieval: the paper's forgetting figures, vanilla fine-tuning (docs/apple.md) -------
.PHONY: apple-figures

apple-figures: install ## AppleRetrieval: forgetting vs corridor length M and scale c (paper Figs 10–11) → reports/
	$(BIN)/python -m lit_rl.figures.apple --runs runs/apple-figures --out reports

# --- Fault tolerance (docs/clusters.md) ----------------------------------------------------------
.PHONY: soak

soak: install ## soak test (minutes, not in `make test`): one apple run SIGKILLed 20 times and resumed → /tmp/lit_rl_soak/soak.json
	$(BIN)/python -m bench.soak --kills 20 --out /tmp/lit_rl_soak
