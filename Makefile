# The two quick-start commands: `make demo` and `make test`. Both create/reuse .venv and install
# the pinned stack (torch 2.14.1 + torchvision 0.29.1 from this machine kind's local wheels; pip only).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.visec-installed
export HF_HUB_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.txt requirements-nodeps.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install -q --no-deps -e .
	$(BIN)/python -c "import visec, torch, timm, lightning, cv2, open_clip, flwr, ray, fastapi, uvicorn, playwright, faiss; cv2.CascadeClassifier"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/visec bench

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	for script in benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf runs analysis .pytest_cache
