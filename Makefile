# lit_rl: thin wrappers over the `lit-rl` Lightning CLI. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Python 3.11 (the version everything here was measured on): python3.11, else python3 when it is
# 3.11; PYTHON=/path/to/python3.x chooses another (pyproject.toml allows 3.11 and 3.12).
PYTHON ?= $(or $(shell command -v python3.11 2>/dev/null),$(shell python3 -c \
	'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null && command -v python3))
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch 2.13.0 from the default index: on Linux x86_64 PyPI's wheel is the CUDA 13 build (it pulls
# PyPI's nvidia-*-cu13 libraries). CPU only: TORCH_SPEC="torch==2.13.0 --index-url
# https://download.pytorch.org/whl/cpu"; another CUDA: that CUDA's PyTorch index.
TORCH_SPEC ?= torch==2.13.0

METHOD ?= ewc
ENV ?= apple
SEED ?= 0
STEPS ?=
DEVICES ?= 1
RESUME ?=
LOGGER ?= neptune
CKPT ?=

LOGGERS := $(sort $(basename $(notdir $(wildcard configs/logger/*.yaml))))
# ENV values: every configs/env/<name>.yaml but the study's own preset, which only `make study` runs.
STUDY_ENVS := nethack_study
ENVS := $(filter-out $(STUDY_ENVS),$(sort $(basename $(notdir $(wildcard configs/env/*.yaml)))))
# A paper preset (`nethack_paper`) overlays its CPU preset (`nethack`): only what differs is in it.
ENV_BASE = $(firstword $(subst _, ,$(ENV)))
# The methods ENV offers: the generic ones plus its scenario's and its preset's own (configs/method/<env>/).
# Off-policy scenarios (SAC) take their own methods plus the generic ones that act on any policy's
# parameters (none, l2, freeze); the generic bc, ewc and ks are PPO's.
OWN_METHODS_ONLY := robotic
ANY_POLICY_METHODS := none l2 freeze
GENERIC_METHODS = $(if $(filter $(ENV_BASE),$(OWN_METHODS_ONLY)),\
	$(foreach m,$(ANY_POLICY_METHODS),configs/method/$(m).yaml),configs/method/*.yaml)
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
# A preset whose configs/pretrain/<env>.yaml has an `sb3:` section pre-trains π* with
# Stable-Baselines3 (lit_rl.pretraining.sb3) into pretrained/<env>.zip (a Gymnasium preset).
SB3_PRETRAIN := $(shell grep -ls '^sb3:' configs/pretrain/$(ENV).yaml)
PRETRAINED := pretrained/$(ENV).$(if $(SB3_PRETRAIN),zip,pt)

.PHONY: help install finetune pretrain eval report test test-slow lint format bench bench-gpu

help: ## list the targets and variables
	@echo "lit_rl — fine-tune pre-trained RL policies without forgetting"
	@echo
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo
	@echo "Variables: METHOD=$(METHOD) (one of: $(METHODS); combine with +, e.g. bc+ks)"
	@echo "           ENV=$(ENV) (one of: $(ENVS))  SEED=$(SEED)  STEPS=<env frames>  DEVICES=$(DEVICES)"
	@echo "           RESUME=1 (continue the run from its last checkpoint)  LOGGER=$(LOGGER) (one of: $(LOGGERS))  CKPT=<path>"
	@echo "           STUDY=<overlay.yaml> (make study)  BENCH_OUT=$(BENCH_OUT) (make bench)  TORCH_SPEC, PYTHON (make install)"

# Checked when the Makefile is read, so a typo fails at once with one line and a non-zero exit
# (and `make -n`, which the docs test runs on every documented command, fails too).
ifneq ($(filter finetune pretrain eval,$(MAKECMDGOALS)),)
ifneq ($(filter $(ENV),$(STUDY_ENVS)),)
$(error ENV=$(ENV) is the NetHack study's preset: run `make study ENV=nethack` (docs/nethack.md))
endif
ifeq ($(filter $(ENV),$(ENVS)),)
$(error unknown ENV '$(ENV)': choose one of: $(ENVS))
endif
endif
ifneq ($(filter eval,$(MAKECMDGOALS)),)
ifeq ($(CKPT),)
$(error set CKPT=<checkpoint path>, e.g. make eval CKPT=runs/apple-ewc-s0/checkpoints/last.ckpt)
endif
endif
ifneq ($(filter finetune pretrain eval,$(MAKECMDGOALS)),)
ifeq ($(wildcard configs/logger/$(LOGGER).yaml),)
$(error unknown LOGGER '$(LOGGER)': choose one of: $(LOGGERS))
endif
endif
ifneq ($(filter data,$(MAKECMDGOALS)),)
ifneq ($(ENV),nethack)
$(error make data is NetHack's only: use ENV=nethack (docs/nethack.md))
endif
endif
# The studies `make study` runs (configs/study/<env>.yaml).
STUDIES := nethack minihack
ifneq ($(filter study,$(MAKECMDGOALS)),)
ifeq ($(filter $(ENV),$(STUDIES)),)
$(error make study runs ENV=nethack or ENV=minihack, not '$(ENV)' (docs/nethack.md, docs/minihack.md))
endif
endif
ifneq ($(filter finetune,$(MAKECMDGOALS)),)
ifneq ($(bad_methods)$(if $(method_list),,empty),)
$(error unknown METHOD '$(METHOD)': choose from $(METHODS) (combine with +, e.g. bc+ks))
endif
endif

install: $(STAMP) ## create the virtualenv and install lit_rl (idempotent)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || test -n "$(PYTHON)" || { echo "error: lit_rl needs Python 3.11 and found \
	no python3.11 (python3 is $$(python3 --version 2>&1 | cut -d' ' -f2)): install it (Debian/Ubuntu: apt-get \
	install python3.11 python3.11-venv; elsewhere: pyenv install 3.11) or pass PYTHON=/path/to/python3.11" >&2; exit 2; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e '.[dev,sb3,trackers]'
	@$(BIN)/python -c 'import torch; cuda = torch.version.cuda; print(f"installed torch {torch.__version__}: " \
		+ (f"CUDA {cuda} build (GPU visible: {torch.cuda.is_available()}); CPU only: make install TORCH_SPEC=\"torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu\"" \
		if cuda else "CPU-only build"))'
	@touch $@

$(PRETRAINED):
	$(MAKE) --no-print-directory pretrain ENV=$(ENV) SEED=$(SEED)

pretrain: install ## pre-train π* for ENV (its FAR subspace) → pretrained/<env>.pt (SB3 presets: .zip)
ifneq ($(SB3_PRETRAIN),)
	$(BIN)/python -m lit_rl.pretraining.sb3 --env configs/env/$(ENV).yaml --config $(SB3_PRETRAIN) --seed $(SEED)
else
	$(BIN)/lit-rl fit $(RUN_CONFIGS) --config configs/pretrain/$(ENV).yaml $(TRAINER_CONFIGS) \
		--seed_everything $(SEED) $(if $(RESUME),--ckpt_path last)
endif
	@echo "pre-trained policy: $(PRETRAINED)"

# Presets whose π* comes from a rule of their own (below), not from `make pretrain`.
OWN_PISTAR := nethack nethack_paper montezuma
finetune: install ## fine-tune π* with METHOD on ENV, evaluating CLOSE and FAR
	$(if $(filter $(ENV),$(OWN_PISTAR)),,@test -f $(PRETRAINED) || $(MAKE) --no-print-directory pretrain ENV=$(ENV) SEED=$(SEED))
	$(BIN)/lit-rl fit $(RUN_CONFIGS) $(foreach m,$(filter-out none,$(method_list)),--config $(call method_config,$(m))) \
		$(TRAINER_CONFIGS) $(COMMON_ARGS)

# A checkpoint inside a run folder is evaluated with that run's own config.yaml (same model, same
# evaluator), so the numbers reproduce the run's summary.json; elsewhere ENV's configs are used.
RUN_OF_CKPT = $(wildcard $(dir $(CKPT))../config.yaml)
eval: install ## evaluate a checkpoint on CLOSE and FAR: make eval CKPT=runs/…/checkpoints/last.ckpt
	$(BIN)/lit-rl validate $(if $(RUN_OF_CKPT),--config $(RUN_OF_CKPT) --trainer.devices 1 --trainer.strategy auto,\
		$(RUN_CONFIGS) --model.pretrained null --config configs/trainer/cpu.yaml) \
		--config configs/logger/csv.yaml --ckpt_path $(CKPT)

report: install ## aggregate runs/*/summary.json → reports/report.md and PNG plots
	$(BIN)/python -m lit_rl.figures.report --runs runs --out reports

# pytest-xdist workers (one per core of the project's 2-core machines); tests that bind ports run
# one after the other in their `xdist_group`, and a module's module-scoped fixture is built once
# (tests/conftest.py). TEST_WORKERS=0 runs the suite in one process.
TEST_WORKERS ?= 2
test: install ## run the test suite (slow runs excluded) on TEST_WORKERS processes
	$(BIN)/pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup)

test-slow: install ## run only the long tests
	$(BIN)/pytest -q -m slow $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup)

lint: install ## ruff lint and format check; import-linter: the layers point one way (pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install ## apply ruff formatting and safe fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The committed figures (bench/results.md) change only when asked: BENCH_OUT=bench/results.
BENCH_OUT ?= reports/bench/results
bench: install ## throughput benchmarks → reports/bench/results.{json,md} (BENCH_OUT=bench/results: the committed file)
	@mkdir -p $(dir $(BENCH_OUT))
	$(BIN)/python -m bench.run --out $(BENCH_OUT)

bench-gpu: install ## GPU machines: paper-size NetHack fine-tuning frames/s, learner/collector shares, GPU memory → JSON
	$(BIN)/python -m bench.gpu

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
#  → random-policy reference → report. STUDY: a YAML with only what differs, overlaid on
#  configs/study/<env>.yaml.
STUDY_BASE = configs/study/$(ENV).yaml
STUDY ?=
.PHONY: study

study: install ## laptop study, resumable: make study ENV=nethack|minihack [STUDY=overlay.yaml]
	$(BIN)/python -m lit_rl.study --config $(STUDY_BASE) $(addprefix --config ,$(filter-out $(STUDY_BASE),$(STUDY)))

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

# DEVICES=2: a 2-rank DDP run (background evaluation on) killed 10 times, one rank or all at a time.
SOAK_DDP = $(filter-out 1,$(DEVICES))
soak: install ## soak test (minutes, not in `make test`): an apple run SIGKILLed 20 times (DEVICES=2: 10) and resumed → bench/results_soak*.md
	$(BIN)/python -m bench.soak --devices $(DEVICES) $(if $(SOAK_DDP),--kills 10 --budget 400000,--kills 20) \
		--out /tmp/lit_rl_soak$(if $(SOAK_DDP),_ddp) --report bench/results_soak$(if $(SOAK_DDP),_ddp).md

# --- Long targets say what they will do before they start ----------------------------------------
# A target that can run longer than ~5 minutes prints, when the Makefile is read (so before any
# prerequisite is built), what it will do, how long that took on the project's 2 shared cores (the
# stage times measured in the docs cited) and how to continue if it is stopped. Only the command you
# typed announces itself (MAKELEVEL 0): the chains it starts are in its own notice.
RESUME_RUN = Stopped? The same command with RESUME=1 continues the run from its last checkpoint
# What a missing π* adds first (a value of its own: commas inside $(if …) would split it).
first_robotic = pretrained/robotic.pt is missing, so it first pre-trains π* by SAC: 200k frames, ≈ 70 min \
	(93k frames took 31 min, docs/robotic.md), and that recipe reached 10 % on peg-unplug-side, not a usable \
	π*; docs/robotic.md builds a cloned stand-in in ≈ 2.5 min. Then it
first_montezuma = $(MONTEZUMA_PISTAR) is missing, so it first builds the Room-7 pool (≈ 4 min), the \
	demonstrations (≈ 4 min) and the cloned π* (≈ 26 min; docs/montezuma.md, Cost). Then it
first_nethack = pretrained/nethack.pt is missing, so it first records 16 expert games (≈ 30 s) and clones π* \
	(600 BC steps; 300 took 2 min 38 s, docs/nethack.md). Then it
first_nethack_bc = it first records 16 expert games (≈ 30 s), then
notice_finetune_robotic = $(if $(wildcard pretrained/robotic.pt),,$(first_robotic)) fine-tunes 100k frames with \
	SAC: ≈ 25–40 min on a free core (docs/robotic.md). $(RESUME_RUN).
notice_finetune_montezuma = $(if $(wildcard $(MONTEZUMA_PISTAR)),,$(first_montezuma)) fine-tunes 20,480 frames: \
	5–21 min per run (docs/montezuma.md). $(RESUME_RUN); finished stages are skipped.
notice_finetune_nethack = $(if $(wildcard pretrained/nethack.pt),,$(first_nethack) fine-tunes 4,096 frames \
	(≈ 1 min, docs/nethack.md). $(RESUME_RUN); finished stages are skipped.)
notice_finetune_paper = ENV=$(ENV) is a GPU preset (docs/nethack.md, docs/montezuma.md): its budget takes days \
	on 2 CPU cores. $(RESUME_RUN).
notice_finetune = $(if $(filter %_paper,$(ENV)),$(notice_finetune_paper),$(notice_finetune_$(ENV)))
notice_pretrain_robotic = pre-trains π* by SAC: 200k frames, ≈ 70 min on 2 cores (93k frames took 31 min, \
	docs/robotic.md); that recipe reached 10 % on peg-unplug-side, not a usable π*. $(RESUME_RUN).
notice_pretrain_montezuma = trains π* by PPO + RND from Room-7 starts: 20,480 frames, ≈ 5–10 min at the 36–66 \
	frames/s docs/montezuma.md measured (it reached 0–12.5 % Room-7 success). $(RESUME_RUN).
notice_pretrain = $(if $(filter %_paper,$(ENV)),$(notice_finetune_paper),$(notice_pretrain_$(ENV)))
notice_montezuma-demo = builds what is missing of pool (≈ 4 min), demonstrations (≈ 4 min) and cloned π* \
	(≈ 26 min), then fine-tunes BC, EWC and none (5–21 min each) and reports: ≈ 1 h on 2 cores \
	(docs/montezuma.md). Stopped? rerun: finished stages and runs are skipped; a stopped run restarts \
	(make finetune ENV=montezuma METHOD=<m> RESUME=1 continues it).
notice_montezuma-pistar = clones π* from the demonstrations with 3 DAgger rounds: 25 min 49 s on 2 cores \
	(docs/montezuma.md, Cost). Stopped? rerun: the pool and demonstrations are kept, the cloning starts over.
notice_montezuma-bc-data = records 512 episodes of up to 4,500 steps with the paper preset's π* (not timed \
	here; a GPU-machine step, docs/montezuma.md). Stopped? rerun: it starts over.
notice_nethack-pretrain = $(if $(wildcard data/nethack),,$(first_nethack_bc)) clones π* by BC: \
	$(or $(BC_STEPS),600) steps (300 took 2 min 38 s on 2 cores, docs/nethack.md). Stopped? rerun: recorded \
	games are kept, the cloning starts over.
# `make data` is ≈ 30 s at its defaults; more FAR states or games than the demo's take hours.
LONG_DATA = $(shell test "$(FAR_COUNT)" -gt 8 -o "$(GAMES)" -gt 64 2>/dev/null && echo yes)
notice_data = $(if $(LONG_DATA),records $(GAMES) expert games and up to $(or $(FAR_ATTEMPTS),5 × $(FAR_COUNT)) \
	games for $(FAR_COUNT) FAR states per target (FAR_DEPTHS=$(FAR_DEPTHS)): a start-state game took 17.6 s \
	on average with GAME_STEPS=20000 at load 7–9; 200 states per level need ≈ 950 games: 1.7–4.6 h on 2 \
	cores (docs/nethack.md). Stopped? Nothing resumes: rerun with GAMES=0 once the games are recorded (the \
	same SEED records the same games again); the start-state search starts again from its first game.)
notice_study = $(notice_study_$(ENV))
notice_study_minihack = runs the MiniHack study: FAR hand-overs → RL π* → none/ks/bc/ewc × 3 seeds → report: \
	π* and seed 0's four runs took 72 min at load 10–20 on 2 shared cores, the 12 runs ≈ 3 h there \
	(docs/minihack.md). Stopped? rerun the same command: finished stages and runs are skipped, a run with a \
	checkpoint resumes.
notice_study_nethack = runs the NetHack laptop study: record → BC π* → Dlvl-4 states → none/bc/ks/ewc × 2 seeds → \
	report: 71.5 min from empty on 2 shared cores (docs/nethack.md). Stopped? rerun the same command: finished \
	stages and runs are skipped, a run with a checkpoint resumes.
notice_apple-figures = runs the paper's Figures 10–11: 12 π* and 21 fine-tunings, 35 min on 2 shared cores \
	(docs/apple.md). Stopped? rerun: finished runs are skipped, interrupted ones continue from their checkpoint.
notice_bench = runs 9 benchmark sections one after the other: ≈ 15–20 min on 2 cores (nethack, montezuma, \
	apple, finetune, memory 183 s: bench/results.md; training, evaluation 523 s: bench/results_training.md; \
	robotic 173 s: docs/robotic.md; montezuma_training not timed) → $(BENCH_OUT).md. Stopped? rerun what is \
	missing: .venv/bin/python -m bench.run --only <sections> --out <stem>.
soak_one = kills one Apple run 20 times and resumes it, beside an unkilled run (docs/clusters.md): ≈ 10 min \
	on 2 loaded cores (400.4 s + 71.2 s at load 18–22, bench/results_soak.md). Stopped? rerun: it starts over.
soak_ddp = kills a 2-rank Apple run 10 times (one rank or both) and resumes it, beside an unkilled 2-rank run \
	(docs/clusters.md): ≈ 14 min on 2 loaded cores (542.1 s + 144.8 s at load 19–23, bench/results_soak_ddp.md). \
	Stopped? rerun: it starts over.
notice_soak = $(if $(SOAK_DDP),$(soak_ddp),$(soak_one))
eval_paper = evaluates a paper-preset run: every subspace on its eval_episodes (200) of up to 100,000 steps, \
	up to 20M steps each (docs/nethack.md; not timed here); a GPU machine's job. Stopped? rerun: it starts over.
notice_eval = $(if $(findstring _paper,$(CKPT)),$(eval_paper))
notice_test = runs the fast test suite: ≈ 12 min on 2 quiet cores (README). It writes nothing to keep: \
	rerun it, or one file: .venv/bin/pytest -q tests/test_<name>.py.
notice_test-slow = runs the long tests (not timed as a whole; each can take minutes). Rerun one: \
	.venv/bin/pytest -q -m slow tests/test_<name>.py.
ifeq ($(MAKELEVEL),0)
$(foreach g,$(MAKECMDGOALS),$(if $(strip $(notice_$(g))),$(info make $(g)$(if $(filter finetune pretrain,$(g)), ENV=$(ENV)): $(strip $(notice_$(g))))))
endif
