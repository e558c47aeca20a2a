# CapsNet reproducible study ("Dynamic Routing Between Capsules", Sabour, Frosst, Hinton 2017)
#
#   make setup        install capslib, the notebook stack and pytest (CPU torch 2.13.0 if no torch)
#   make test         unit tests, then every notebook on a tiny profile (CPU, a few minutes)
#   make mutation     plant each of a list of bugs in a copy of capslib; the tests must catch them
#   make reproduce    the whole study (GPU): data, every training run, figures, tables, reports
#   make quick        the same study on small subsets, on CPU, in minutes, written under quick/
#   make bench        speed of each training path (GPU) -> results/benchmarks.md
#   make lab          JupyterLab on the repository (notebooks/ open; results/ in reach)
#   make clean        delete checkpoints, quick/ and scratch/ (never data/ or results/)
#
# The steps of the study, each an executed notebook under $(RESULTS)/notebooks/:
#   make data         01_data     checksums, class balance, samples, pixels (MNIST, Fashion-MNIST)
#   make mnist        02_train    Table 1: CapsNet routing 1 and 3, with and without reconstruction,
#                                 and the baseline CNN, each for every seed in SEEDS
#   make train        02_train    one run: make train ROUTING=1 RECON=False SEED=2 [DATASET= MODEL=]
#   make figures      03, 04      reconstructions, perturbations and routing of the best MNIST routing-3 run
#   make fashion      02, 05      Fashion-MNIST: routing 3 + reconstruction for every seed, its figures
#   make validated    capslib sweep table1: Table 1 and Fashion-MNIST with the first 10,000 training
#                                 images held out, so every run is also scored "selected on validation"
#   make ablation     07_ablation the official recipe at full length (on 50,000 and on all 60,000
#                                 images), each official choice added to (removed from) the paper (official)
#                                 recipe, Table 1's routing-3 runs in strict float32: where the 0.25% comes from
#   make table1-official          capslib sweep table1-official: the official recipe at full length, with the
#                                 validation split, for Table 1's other rows and Fashion-MNIST (GPU-hours)
#   make multimnist   08_multimnist  section 6: CapsNet and the baseline on MultiMNIST (generated on the
#                                 device), top-2 test error, the paper's Fig. 5 (capslib sweep multimnist)
#   make affine       09_affine   section 5.2: both trained on expanded MNIST (40×40), scored on an
#                                 affNIST-style generated set at a matched accuracy (capslib sweep affine)
#   make tables       06_summary  tables beside the paper's Table 1, accuracy and loss curves
#   make report       HTML of the executed notebooks, without code (and with, not committed); then the
#                     notebooks' figures give way to a line naming the report (capslib/reports.py)
#
# On a machine with several GPUs, every run takes a GPU that no other run holds (capslib/gpus.py),
# and make runs as many steps at once as there are visible GPUs (override with make -jN).

PYTHON ?= python3
CPU_TORCH := torch==2.13.0

# Profiles: full (GPU; the committed results), quick (CPU, minutes), tiny (CPU, the test suite).
# The size of each run (epochs, batch size, subsets) is declared in capslib/profiles.py and passed
# to the notebooks as their `profile` parameter; EPOCHS, BATCH_SIZE, TRAIN_SUBSET and TEST_SUBSET,
# when set, override it. Here: where the study goes, which runs, on which device.
PROFILE ?= full
ifeq ($(PROFILE),full)
  STUDY_DIR ?= .
  SEEDS ?= 1 2 3
  DEVICE ?= auto
else ifeq ($(PROFILE),quick)
  STUDY_DIR ?= quick
  SEEDS ?= 1
  DEVICE ?= cpu
  ABLATION_FLAGS ?= --routing 1  # the ablation's 15 runs at routing 1: minutes on a CPU
else ifeq ($(PROFILE),tiny)
  STUDY_DIR ?= quick/tiny
  SEEDS ?= 1
  DEVICE ?= cpu
  MNIST_CONFIGS ?= routing1_norecon routing3_recon baseline
  ABLATION_FLAGS ?= --routing 1  # the ablation's 15 runs at routing 1: CI's CPU time
else
  $(error PROFILE must be full, quick or tiny, not '$(PROFILE)')
endif
# Make splits names at spaces: a study folder with one would become several targets, each failing.
ifneq ($(words $(STUDY_DIR)),1)
  $(error STUDY_DIR must be one folder name, without spaces: got '$(STUDY_DIR)')
endif
MNIST_CONFIGS ?= routing1_norecon routing1_recon routing3_norecon routing3_recon baseline
ABLATION_FLAGS ?=
RUNS := $(STUDY_DIR)/runs
RESULTS := $(STUDY_DIR)/results
NB := $(RESULTS)/notebooks

# A run is named <dataset>_<configuration>_seed<N> (capslib.runs.run_name builds the same names).
mnist_runs := $(foreach c,$(MNIST_CONFIGS),$(foreach s,$(SEEDS),mnist_$(c)_seed$(s)))
fashion_runs := $(foreach s,$(SEEDS),fashion-mnist_routing3_recon_seed$(s))
run_notebooks = $(patsubst %,$(NB)/train/%.ipynb,$1)

# 02_train's parameters, read off a run name.
name_parts = $(subst _, ,$1)
train_parameters = -p dataset $(word 1,$(call name_parts,$1)) \
	-p model $(if $(filter baseline,$(call name_parts,$1)),baseline,capsnet) \
	-p routing $(or $(patsubst routing%,%,$(filter routing%,$(call name_parts,$1))),3) \
	-p reconstruction $(if $(filter norecon baseline,$(call name_parts,$1)),False,True) \
	-p seed $(patsubst seed%,%,$(lastword $(call name_parts,$1))) \
	-p profile $(PROFILE) $(size_overrides) -p device $(DEVICE) \
	-p runs_dir $(RUNS) -p results_dir $(RESULTS) -p progress_bar False
size_overrides = $(if $(EPOCHS),-p epochs $(EPOCHS)) $(if $(BATCH_SIZE),-p batch_size $(BATCH_SIZE)) \
	$(if $(TRAIN_SUBSET),-p train_subset $(TRAIN_SUBSET)) $(if $(TEST_SUBSET),-p test_subset $(TEST_SUBSET))
# 03-05 train a short run (of PROFILE's size) only when no run of their configuration is logged.
model_parameters = -p runs_dir $(RUNS) -p results_dir $(RESULTS) -p profile $(PROFILE) -p device $(DEVICE)

# Every step runs once: its executed notebook is the target, and prerequisites are order-only (after
# the '|'), so editing a notebook or a fresh clone's file times never retrain anything. To redo the
# study, run it into a new folder (make reproduce STUDY_DIR=redo) or delete the outputs to redo.
#
# $(call notebook,SOURCE,OUTPUT,PARAMETERS): execute notebooks/SOURCE.ipynb into OUTPUT. papermill writes
# OUTPUT.partial.ipynb, renamed to OUTPUT only when every cell succeeded: a failed or cut-off run never
# looks done, and its partial notebook shows where it stopped. CAPSLIB_COMMAND records the exact command in each run's provenance.
papermill = $(PYTHON) -m papermill --cwd . --log-output --no-progress-bar -k python3 notebooks/$1.ipynb $(2:.ipynb=.partial.ipynb) $3
notebook = @mkdir -p $(dir $2) && echo "papermill notebooks/$1.ipynb -> $2" && \
	CAPSLIB_COMMAND='$(strip $(call papermill,$1,$2,$3))' $(call papermill,$1,$2,$3) && mv $(2:.ipynb=.partial.ipynb) $2

# One step per GPU at once: -j defaults to the number of visible GPUs (nvidia-smi first, so that a
# CPU machine never starts Python for this), unless -j was given.
GPUS := $(if $(shell command -v nvidia-smi 2>/dev/null),$(shell $(PYTHON) -m capslib.gpus 2>/dev/null),0)
ifeq ($(filter -j% j%,$(MAKEFLAGS)),)
  ifneq ($(filter-out 0 1,$(GPUS)),)
    MAKEFLAGS += -j$(GPUS)
  endif
endif
JOBS ?= $(if $(filter-out 0,$(GPUS)),$(GPUS),1)
sweep = $(PYTHON) -m capslib sweep $1 --seeds $(subst $(space),$(comma),$(SEEDS)) --jobs $(JOBS) \
	--runs-dir $(RUNS) --results-dir $(RESULTS) --profile $(PROFILE) --device $(DEVICE)
space := $(subst ,, )
comma := ,

.PHONY: setup test mutation unit-test notebook-test reproduce quick data mnist train figures fashion validated ablation \
	table1-official multimnist affine tables report bench lab clean print-runs
.DELETE_ON_ERROR:

setup:
	@$(PYTHON) -c "import torch" 2>/dev/null && echo "torch already installed: keeping it" || $(PYTHON) -m pip install "$(CPU_TORCH)"
	$(PYTHON) -m pip install -e ".[notebooks,dev]"

test:
	$(PYTHON) -m pytest -q

# Not part of make test (CI stays fast); see tools/mutation.py. MUTATION_ARGS="-k shift" picks mutants.
mutation:
	$(PYTHON) tools/mutation.py $(MUTATION_ARGS)

reproduce: data mnist figures fashion validated ablation table1-official multimnist affine tables report

quick:
	$(MAKE) PROFILE=quick reproduce

data: $(NB)/01_data_mnist.ipynb $(NB)/01_data_fashion-mnist.ipynb

$(NB)/01_data_%.ipynb: | notebooks/01_data.ipynb
	$(call notebook,01_data,$@,-p dataset $* -p results_dir $(RESULTS))

mnist: $(call run_notebooks,$(mnist_runs))

$(NB)/train/%.ipynb: | notebooks/02_train.ipynb
	$(call notebook,02_train,$@,$(call train_parameters,$*))

# One run, named by Make variables: make train ROUTING=1 RECON=False SEED=2
DATASET ?= mnist
MODEL ?= capsnet
ROUTING ?= 3
RECON ?= True
SEED ?= 1
# RECON takes the words the command line takes (True/False, yes/no, 1/0, any case); anything else stops.
recon_word = $(strip $(if $(filter true t yes y 1,$(call lower,$(RECON))),recon,$(if $(filter false f no n 0,$(call lower,$(RECON))),norecon,$(error RECON must be True or False, not '$(RECON)'))))
lower = $(shell echo '$1' | tr A-Z a-z)
train_run = $(DATASET)_$(if $(filter baseline,$(MODEL)),baseline,routing$(ROUTING)_$(recon_word))_seed$(SEED)
train: $(call run_notebooks,$(train_run))

# The run names above, for tests/test_recipes.py to compare with capslib.runs.run_name.
print-runs:
	@echo "mnist: $(mnist_runs)"
	@echo "fashion: $(fashion_runs)"
	@echo "train: $(train_run)"

figures: $(NB)/03_reconstruct_mnist.ipynb $(NB)/04_perturb_mnist.ipynb

$(NB)/03_reconstruct_mnist.ipynb $(NB)/04_perturb_mnist.ipynb: | $(call run_notebooks,$(filter mnist_routing3_recon_%,$(mnist_runs)))
$(NB)/04_perturb_mnist.ipynb: | $(call run_notebooks,$(filter mnist_routing1_norecon_%,$(mnist_runs)))
$(NB)/03_reconstruct_mnist.ipynb: | notebooks/03_reconstruct.ipynb
	$(call notebook,03_reconstruct,$@,$(model_parameters))
$(NB)/04_perturb_mnist.ipynb: | notebooks/04_perturb.ipynb
	$(call notebook,04_perturb,$@,$(model_parameters))

fashion: $(NB)/05_fashion.ipynb

$(NB)/05_fashion.ipynb: | notebooks/05_fashion.ipynb $(call run_notebooks,$(fashion_runs))
	$(call notebook,05_fashion,$@,$(model_parameters))

# Sweeps: capslib declares each study's runs (capslib/studies.py); $(RESULTS)/<study>/.done marks a study
# whose runs all finished. A run cut off by a time limit resumes when its step runs again; a run whose logs
# say it finished is not trained again (its checkpoint may have stayed on another machine).
$(RESULTS)/%/.done:
	$(call sweep,$*) && touch $@

# The ablation's sweep also trains its reference, the official recipe at full length.
$(RESULTS)/ablation/.done:
	$(call sweep,official$(comma)ablation) $(ABLATION_FLAGS) && touch $@

validated: $(RESULTS)/table1/.done

ablation: $(NB)/07_ablation.ipynb

$(NB)/07_ablation.ipynb: | notebooks/07_ablation.ipynb $(RESULTS)/ablation/.done $(RESULTS)/official-60k/.done \
		$(RESULTS)/precision/.done
	$(call notebook,07_ablation,$@,-p results_dir $(RESULTS) -p logs_root $(RESULTS))

table1-official: $(RESULTS)/table1-official/.done

# The paper's other experiments: sized by PROFILE (capslib/profiles.py GENERATED_PROFILES; full: the
# studies' own lengths, capslib/studies.py). On the full profile a sweep trains them first (one run per
# GPU), then the notebooks read them; on quick and tiny the notebooks train them (one process less).
other_sweep = $(if $(filter full,$(PROFILE)),$(RESULTS)/$1/.done)
seeds_yaml = [$(subst $(space),$(comma) ,$(strip $(SEEDS)))]
other_parameters = -y "seeds: $(seeds_yaml)" -p profile $(PROFILE) -p device $(DEVICE) -p runs_dir $(RUNS) -p results_dir $(RESULTS)

multimnist: $(NB)/08_multimnist.ipynb

$(NB)/08_multimnist.ipynb: | notebooks/08_multimnist.ipynb $(call other_sweep,multimnist)
	$(call notebook,08_multimnist,$@,$(other_parameters))

affine: $(NB)/09_affine.ipynb

$(NB)/09_affine.ipynb: | notebooks/09_affine.ipynb $(call other_sweep,affine)
	$(call notebook,09_affine,$@,$(other_parameters))

tables: $(NB)/06_summary.ipynb

$(NB)/06_summary.ipynb: | notebooks/06_summary.ipynb $(call run_notebooks,$(mnist_runs) $(fashion_runs)) \
		$(RESULTS)/table1/.done $(RESULTS)/ablation/.done $(RESULTS)/official-60k/.done $(RESULTS)/table1-official/.done
	$(call notebook,06_summary,$@,-p logs_dir $(RESULTS)/runs -p logs_root $(RESULTS) -p results_dir $(RESULTS))

# HTML reports of the study's notebooks (not of every training run: 02_train is one per run):
# results/html/ without code cells (committed), results/html/with-code/ (not committed). Then each
# executed notebook is lightened: its figures become a line saying where they are, so that git holds
# each figure once, not three times (capslib/reports.py; a lightened notebook is not rendered again).
# The training runs' notebooks (not rendered) are lightened too: their figures are only the run's
# curves, which its log under $(RESULTS)/runs/ redraws, and one per run adds up to megabytes.
REPORTED := 01_data_mnist 01_data_fashion-mnist 03_reconstruct_mnist 04_perturb_mnist 05_fashion 06_summary 07_ablation \
	08_multimnist 09_affine
report: figures fashion tables data ablation multimnist affine
	$(PYTHON) -m capslib.reports report $(REPORTED:%=$(NB)/%.ipynb) --html-dir $(RESULTS)/html \
		--with-code-dir $(RESULTS)/html/with-code --figures-dir $(RESULTS)/figures
	$(PYTHON) -m capslib.reports lighten $(filter-out %.partial.ipynb,$(wildcard $(NB)/train/*.ipynb)) --logs-dir $(RESULTS)/runs

bench:
	$(PYTHON) -m capslib bench --out-dir results

# Rooted at the repository, so results/ (figures, HTML reports) is in reach; opens on notebooks/.
# --allow-root: containers often run as root. The pre-save hook keeps the committed notebooks'
# metadata as committed (capslib/lab.py), so opening one leaves git status clean.
lab:
	$(PYTHON) -m jupyter lab --allow-root --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks \
		--ContentsManager.pre_save_hook=capslib.lab.keep_committed_metadata

clean:
	rm -rf runs quick scratch
