# make demo | make test | make test-fast | make lint | make dashboard | make environment
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 8097

.PHONY: demo test test-fast lint dashboard environment clean

# Reinstall only when the pins change.
$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "setuptools>=77,<81" wheel
	$(PY) -m pip install -q --no-build-isolation -r requirements.txt
	touch $(STAMP)

# The demo trains into a folder of its own, output/demo (never a user's output/w_skipganomaly/digits/0), and
# replaces a run there only while it is still the one the demo wrote: DEMO_MARK holds the checksum of that
# run's loss log, which a user's run (or the demo's, resumed) does not match; train.py refuses those.
# DEMO_PENDING marks a demo started where there was no output/demo and not finished (Ctrl-C): its run too.
DEMO_MARK := output/demo/.made-by-make-demo
DEMO_PENDING := output/.make-demo-pending
DEMO_OWN = $(shell { test -f $(DEMO_PENDING) || { test -f $(DEMO_MARK) && cksum 2>/dev/null <output/demo/loss_log.txt \
	| cmp -s - $(DEMO_MARK); }; } && echo --overwrite)

demo: $(STAMP)
	@mkdir -p output && (test -e output/demo || touch $(DEMO_PENDING))
	$(PY) train.py --dataset digits --abnormal_class 0 --model w_skipganomaly --device cpu \
		--nc 1 --isize 16 --ngf 32 --ndf 32 --nz 64 --batchsize 32 --niter 10 --n_critic 2 --manualseed 0 \
		--outf ./output --name demo $(DEMO_OWN)
	@cksum <output/demo/loss_log.txt >$(DEMO_MARK) && rm -f $(DEMO_PENDING)
	@echo "next, in this shell: . .venv/bin/activate"
	@echo "  python -m tools.sample_images --dataset digits --out new_images   # ten test digits as PNG files"
	@echo "  python predict.py --path new_images/ --weights output/demo   # score them with the run"
	@echo "  make dashboard   # then add --display to a train.py command to watch it train"

# Every test (what CI runs).
test: $(STAMP)
	PYTHON=$(PY) dashboard/setup.sh
	$(PY) -m pytest -q --durations=15 tests

# The inner loop: no slow, browser, Ray or Fashion-MNIST tests (markers in pyproject.toml).
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow and not browser and not ray and not dataset" tests

# ruff, and the layers of lib/ (import-linter's contracts in pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

# A Visdom server whose pages render offline (JS/CSS/fonts from the npm registry, once), on localhost;
# SHARE=1 with VISDOM_USERNAME and VISDOM_PASSWORD: on every interface, behind a login.
dashboard: $(STAMP)
	@PORT=$(PORT) SHARE=$(SHARE) PYTHON=$(PY) dashboard/serve.sh

# The frozen list of exact versions of the tested environment.
environment: $(STAMP)
	$(PY) -m pip freeze --exclude-editable > environment.txt

# What make demo made, and only while it is still the demo's run: ./output holds the user's own runs.
clean:
	$(if $(DEMO_OWN),rm -rf output/demo $(DEMO_PENDING))
	rm -rf .pytest_cache
