# CapsNet reproducible study ("Dynamic Routing Between Capsules", Sabour, Frosst, Hinton 2017)
#
#   make setup        install the pinned environment, requirements/cpu.lock (CPU torch), then capslib (editable);
#                     LOCK=cuda: requirements/cuda.lock (GPU machines); LOCK=none: pyproject.toml's ranges
#   make lock         write requirements/cpu.lock and cuda.lock again (after editing pyproject.toml's dependencies)
#   make test         the layer contracts, unit tests, then every notebook on the tiny profile (CPU, minutes)
#   make test-fast    the unit tests alone, without the slow ones (about a minute): the edit loop
#   make mutation     plant each of a list of bugs in a copy of capslib; the tests must catch them
#   make reproduce    the whole study (GPU): data, every set of runs, figures, tables, reports
#   make quick        the same study on small subsets, on a CPU, written under quick/
#   make laptop       one CapsNet (routing 3 + reconstruction) past 99% on a CPU, in about a quarter of an hour:
#                     the laptop profile, into runs/laptop; 03, 04, 05 and 10 on a CPU show it (results/laptop:
#                     the committed record of that run)
#   make bench        speed of each training path -> results/benchmarks.md (CUDA)
#   make bench-cpu    speed of each CPU path beside the XifengGuo port -> results/benchmarks-cpu.md
#   make docs         the numbers README.md and docs/ quote, generated from the committed tables
#   make lab          JupyterLab on the repository (notebooks/ open; results/ in reach)
#   make explore      JupyterLab opened on 10_explore: one image at a time through a trained CapsNet (ipywidgets)
#   make clean        delete checkpoints, quick/ and scratch/ (never data/ or results/)
#
# The study, step by step. Each set of runs is declared once in capslib/study/studies.py and trained by
# `capslib sweep <set>` (docs/running.md); each other step is a notebook, executed under $(RESULTS)/notebooks/.
#   make data             01_data         checksums, class balance, samples, pixels (MNIST, Fashion-MNIST)
#   make table1           sweep table1    Table 1's five configurations and Fashion-MNIST × SEEDS, 40 epochs
#   make figures          03, 04          reconstructions, perturbations and routing of table1's best MNIST model
#   make fashion          05_fashion      Fashion-MNIST: every seed, and the figures of its best run
#   make validated        sweep validated table1's runs with the first 10,000 training images held out
#   make ablation         07_ablation     sweeps official, official-60k, ablation, precision(-bf16): where the 0.25% comes from
#   make table1-official  sweep           the official recipe at full length for Table 1's other rows (GPU-hours)
#   make multimnist       08_multimnist   section 6: CapsNet and the baseline on MultiMNIST (sweep multimnist)
#   make affine           09_affine       section 5.2: expanded MNIST → an affNIST-style set (sweep affine)
#   make tables           06_summary      tables beside the paper's Table 1, accuracy and loss curves
#   make report           HTML of the executed notebooks (results/html/), then each notebook's figures
#                         give way to a line naming its report (capslib/study/reports.py)
#
# On a machine with several GPUs every run takes a GPU that no other run holds (capslib/core/gpus.py): a
# sweep trains as many runs at once as there are visible GPUs (JOBS), and make runs steps side by side.
# On a Slurm cluster, EXECUTOR=slurm makes each sweep one job array, a task per run, on the cluster's GPUs
# (capslib/study/slurm.py); SLURM_CONFIG names a TOML file of its settings (capslib/study/cluster.py):
#   make table1 EXECUTOR=slurm SLURM_CONFIG=cluster.toml

PYTHON ?= python3
# The pinned environments (tools/lock.py says how and why): cpu (CPython 3.11, torch's CPU build; CI installs
# it), cuda (CPython 3.12, PyPI's CUDA torch, as in the GPU results), none (no lock). An installed GPU build of
# torch is kept by LOCK=cpu; run.json records which lock the environment matches (capslib/core/provenance.py).
LOCK ?= cpu

# Profiles (capslib/study/profiles.py): full (GPU; the committed results), quick (CPU, minutes), tiny (the
# tests). A profile sizes every run; here: where the study goes, which seeds, on which device.
PROFILE ?= full
ifeq ($(PROFILE),full)
  STUDY_DIR ?= .
  SEEDS ?= 1 2 3
  DEVICE ?= auto
else ifneq ($(filter quick tiny,$(PROFILE)),)
  STUDY_DIR ?= quick$(if $(filter tiny,$(PROFILE)),/tiny)
  SEEDS ?= 1
  DEVICE ?= cpu
else
  $(error PROFILE must be full, quick or tiny, not '$(PROFILE)')
endif
# Make splits names at spaces: a study folder with one would become several targets, each failing.
ifneq ($(words $(STUDY_DIR)),1)
  $(error STUDY_DIR must be one folder name, without spaces: got '$(STUDY_DIR)')
endif
RUNS := $(STUDY_DIR)/runs
RESULTS := $(STUDY_DIR)/results
NB := $(RESULTS)/notebooks

# Every step runs once: its output (an executed notebook, or a sweep's .done mark) is the target, and
# prerequisites are order-only (after the '|'), so editing a notebook or a fresh clone's file times never
# retrain anything. To redo the study, run it into a new folder (make reproduce STUDY_DIR=redo). A notebook's
# step waits for the studies it reads, as READERS in capslib/study/studies.py declares (a test holds them equal).
#
# $(call notebook,SOURCE,OUTPUT,PARAMETERS): execute notebooks/SOURCE.ipynb into OUTPUT. papermill writes
# OUTPUT.partial.ipynb, renamed to OUTPUT only when every cell succeeded: a failed or cut-off run never
# looks done. CAPSLIB_COMMAND records the exact command in the provenance of what the notebook writes.
papermill = $(PYTHON) -m papermill --cwd . --log-output --no-progress-bar -k python3 notebooks/$1.ipynb $(2:.ipynb=.partial.ipynb) $3
notebook = @mkdir -p $(dir $2) && echo "papermill notebooks/$1.ipynb -> $2" && \
	CAPSLIB_COMMAND='$(strip $(call papermill,$1,$2,$3))' $(call papermill,$1,$2,$3) && mv $(2:.ipynb=.partial.ipynb) $2
folders = -p runs_dir $(RUNS) -p results_dir $(RESULTS)
models = $(folders) -p profile $(PROFILE) -p device $(DEVICE)

# $(RESULTS)/<set>/.done marks a set of runs whose every run finished. A run cut off by a time limit resumes
# when its sweep runs again; a run whose logs say it finished is not trained again (its checkpoint may have
# stayed on another machine). JOBS: runs at a time, one per visible GPU (nvidia-smi first, so that a CPU
# machine never starts Python for this). With EXECUTOR=slurm the sweep waits until every task of its job
# array has ended, so .done means the same there: every run finished (a task requeued after a time limit or
# a preemption is waited for; a cancelled or failed one fails the target, and make again resubmits it).
EXECUTOR ?= local
SLURM_CONFIG ?=
ifeq ($(filter local slurm,$(EXECUTOR)),)
  $(error EXECUTOR must be local or slurm, not '$(EXECUTOR)')
endif
GPUS := $(if $(filter local,$(EXECUTOR)),$(if $(shell command -v nvidia-smi 2>/dev/null),$(shell $(PYTHON) -m capslib.core.gpus 2>/dev/null),0),0)
# RUNS_PER_GPU: runs that may share one GPU (1: a long run fills it; docs/speed.md says when sharing pays).
RUNS_PER_GPU ?= 1
JOBS ?= $(if $(filter-out 0,$(GPUS)),$(shell echo $$(( $(GPUS) * $(RUNS_PER_GPU) ))),1)
comma := ,
executor = $(if $(filter slurm,$(EXECUTOR)),--executor slurm $(if $(SLURM_CONFIG),--slurm-config $(SLURM_CONFIG)),\
	--jobs $(JOBS) $(if $(filter-out 1,$(RUNS_PER_GPU)),--runs-per-gpu $(RUNS_PER_GPU)))
sweep = $(PYTHON) -m capslib sweep $1 --profile $(PROFILE) --seeds $(subst $() ,$(comma),$(strip $(SEEDS))) \
	$(executor) --runs-dir $(RUNS) --results-dir $(RESULTS) $(if $(filter-out auto,$(DEVICE)),--device $(DEVICE))
done = $(RESULTS)/$1/.done

.PHONY: setup lock test test-fast mutation docs reproduce quick laptop data table1 figures fashion validated ablation table1-official \
	multimnist affine tables report bench bench-cpu lab explore clean
.DELETE_ON_ERROR:

setup:
	$(PYTHON) tools/lock.py install $(LOCK)

# Both locks again, from pyproject.toml and requirements/*.in, keeping the pins that still fit; UPGRADE=1 takes
# the newest versions that fit. Needs PyPI (and, for torch's CPU wheel, a local wheelhouse or PyTorch's index).
lock:
	$(PYTHON) tools/lock.py compile $(if $(UPGRADE),--upgrade)

# Two pytest workers (pytest-xdist), whole files each (--dist loadfile: a file's module fixtures, its trained
# runs, are built once): on CI's two cores the tests that wait (on subprocesses, signals, the background tiny
# study) run beside the ones that compute. TEST_WORKERS=0: one process, as before (pytest -q alone).
TEST_WORKERS ?= 2
pytest = $(PYTHON) -m pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)
test:
	$(PYTHON) -c "from importlinter.cli import lint_imports_command as lint; lint()"
	$(pytest)

# The edit loop: the unit tests, without the files marked slow in tests/conftest.py (real trainings,
# processes stopped by signals, notebooks, Slurm, the browser): about a minute on two cores. make test
# before a commit.
test-fast:
	$(pytest) -m "not slow"

# Not part of make test (CI stays fast); see tools/mutation.py. MUTATION_ARGS="-k shift" picks mutants.
mutation:
	$(PYTHON) tools/mutation.py $(MUTATION_ARGS)

reproduce: data table1 figures fashion validated ablation table1-official multimnist affine tables report

quick:
	$(MAKE) PROFILE=quick reproduce

# results/laptop is the committed record of the laptop run that the docs quote (its logs, no checkpoint): a
# sweep into it would find the run finished and train nothing, or, once removed, write over the record. The
# user's own run goes under runs/laptop (ignored by git), checkpoint and logs, where 03, 04 and 10 look for
# it (capslib/study/notebook.py: LAPTOP_RUNS, LAPTOP_RESULTS); rerunning resumes it, or says it is done.
laptop:
	$(PYTHON) -m capslib sweep table1 --profile laptop --only mnist_routing3_recon_seed1 --seeds 1 \
		--runs-dir runs/laptop --results-dir runs/laptop/logs
	@echo "make laptop: the model is runs/laptop/table1/mnist_routing3_recon_seed1/last.pt (logs in" \
		"runs/laptop/logs/table1/mnist_routing3_recon_seed1); notebooks 03, 04 and 10 on a CPU show it"

$(RESULTS)/%/.done:
	$(call sweep,$*) && touch $@

data: $(NB)/01_data_mnist.ipynb $(NB)/01_data_fashion-mnist.ipynb
$(NB)/01_data_%.ipynb: | notebooks/01_data.ipynb
	$(call notebook,01_data,$@,-p dataset $* -p results_dir $(RESULTS))

table1: $(call done,table1)

figures: $(NB)/03_reconstruct_mnist.ipynb $(NB)/04_perturb_mnist.ipynb
$(NB)/03_reconstruct_mnist.ipynb: | notebooks/03_reconstruct.ipynb $(call done,table1)
	$(call notebook,03_reconstruct,$@,$(models))
$(NB)/04_perturb_mnist.ipynb: | notebooks/04_perturb.ipynb $(call done,table1)
	$(call notebook,04_perturb,$@,$(models))

fashion: $(NB)/05_fashion.ipynb
$(NB)/05_fashion.ipynb: | notebooks/05_fashion.ipynb $(call done,table1)
	$(call notebook,05_fashion,$@,$(models))

validated: $(call done,validated)

ablation: $(NB)/07_ablation.ipynb
$(NB)/07_ablation.ipynb: | notebooks/07_ablation.ipynb $(foreach s,official official-60k ablation precision precision-bf16 validated,$(call done,$s))
	$(call notebook,07_ablation,$@,-p logs_root $(RESULTS) -p results_dir $(RESULTS))

table1-official: $(call done,table1-official)

# The paper's other experiments: on the full profile a sweep trains them first (one run per GPU), then
# the notebooks read them; on quick and tiny the notebooks train them (one process less).
seeds_yaml = [$(subst $() ,$(comma) ,$(strip $(SEEDS)))]
other_experiment = $(if $(filter full,$(PROFILE)),$(call done,$1))

multimnist: $(NB)/08_multimnist.ipynb
$(NB)/08_multimnist.ipynb: | notebooks/08_multimnist.ipynb $(call other_experiment,multimnist)
	$(call notebook,08_multimnist,$@,-y "seeds: $(seeds_yaml)" $(models))

affine: $(NB)/09_affine.ipynb
$(NB)/09_affine.ipynb: | notebooks/09_affine.ipynb $(call other_experiment,affine)
	$(call notebook,09_affine,$@,-y "seeds: $(seeds_yaml)" $(models))

tables: $(NB)/06_summary.ipynb
$(NB)/06_summary.ipynb: | notebooks/06_summary.ipynb $(foreach s,table1 validated official official-60k table1-official,$(call done,$s))
	$(call notebook,06_summary,$@,-p logs_root $(RESULTS) -p results_dir $(RESULTS))

# HTML reports of the study's notebooks: results/html/ without code cells (committed), results/html/with-code/
# (not committed). Then each executed notebook is lightened: its figures become a line saying where they
# are, so that git holds each figure once, not three times.
REPORTED := 01_data_mnist 01_data_fashion-mnist 03_reconstruct_mnist 04_perturb_mnist 05_fashion 06_summary 07_ablation \
	08_multimnist 09_affine
report: data figures fashion ablation multimnist affine tables
	$(PYTHON) -m capslib report $(REPORTED:%=$(NB)/%.ipynb) --html-dir $(RESULTS)/html \
		--with-code-dir $(RESULTS)/html/with-code --figures-dir $(RESULTS)/figures

bench:
	$(PYTHON) -m capslib bench --out-dir results

bench-cpu:
	$(PYTHON) -m capslib bench --device cpu --rounds 5 --out-dir results

# The numbers README.md and docs/ quote, generated from the committed tables (capslib/study/quotes.py);
# make test checks that none has drifted (tests/test_docs.py).
COG_FLAGS := -p "from capslib.study import quotes as q"
docs:
	$(PYTHON) -m cogapp -r $(COG_FLAGS) README.md docs/*.md

# Rooted at the repository, so results/ (figures, HTML reports) is in reach; opens on notebooks/.
# --allow-root: containers often run as root. The pre-save hook keeps the committed notebooks'
# metadata as committed (capslib/study/lab.py), so opening one leaves git status clean. LAB_OPTIONS: more
# of JupyterLab's options (the browser test: --no-browser, a port and a token).
LAB_URL ?= /lab/tree/notebooks
lab:
	$(PYTHON) -m jupyter lab --allow-root --ServerApp.root_dir=. --LabApp.default_url=$(LAB_URL) \
		--ContentsManager.pre_save_hook=capslib.study.lab.keep_committed_metadata $(LAB_OPTIONS)

# The explorer is a way to look at a model, not a step of the study: it shows one image at a time of the
# model that 03 and 04 draw for the study (so `make reproduce` and `make report` leave it out). It needs a
# live kernel and a browser: run all its cells, then use the widgets (tests/test_explorer_browser.py does).
explore:
	$(MAKE) --no-print-directory lab LAB_URL=/lab/tree/notebooks/10_explore.ipynb

clean:
	rm -rf runs quick scratch
