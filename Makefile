# The two commands that matter: `make demo` and `make test`. Both create .venv and install
# what they need (torch pinned to 2.13.0 through constraints.txt; TORCH_INDEX picks where it comes from,
# e.g. make demo TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu" for the CPU build on Linux).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -q -c constraints.txt
TORCH_INDEX ?=
DEMO_RUN := runs/demo
# Today's training defaults (the nano U-Net, cosine schedule, v-prediction, min-SNR, clip-aware loss,
# Muon on the hidden layers, a learning rate that decays over the budget), class-conditional, for 5
# minutes with bf16 autocast; the model at a fifth of the run is kept as runs/demo/guide, to sample the
# final one with autoguidance (15 steps, guided at the last 5: 20 network evaluations).
DEMO_ARGS := --data mnist --out $(DEMO_RUN) --conditional --amp --minutes 5 --ckpt-every 250 --guide-at 0.2
DEMO_GUIDE := --guide $(DEMO_RUN)/guide --guidance 1 --guidance-interval 0,0.6

.PHONY: demo test lint bench clean

$(VENV)/.base:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(PIP) torch==2.13.0 $(TORCH_INDEX)
	touch $@

$(VENV)/.demo: $(VENV)/.base pyproject.toml constraints.txt
	$(PIP) -e .
	touch $@

$(VENV)/.test: $(VENV)/.demo
	$(PIP) -e ".[test]"
	touch $@

# Fetch MNIST (offline-capable), train the tiny U-Net for a few minutes, sample a grid.
demo: $(VENV)/.demo
	$(BIN)/tinydiff fetch mnist
	$(BIN)/tinydiff train $(DEMO_ARGS) $$(test -e $(DEMO_RUN)/latest && echo --resume)
	$(BIN)/tinydiff sample --ckpt $(DEMO_RUN) --sampler dpm++2m --steps 15 --eta 3 --n 60 \
		$$(test -e $(DEMO_RUN)/guide && echo "$(DEMO_GUIDE)") --out $(DEMO_RUN)/grid.png --overwrite

test: $(VENV)/.test
	$(BIN)/python -m pytest

lint: $(VENV)/.test
	$(BIN)/ruff check src tests benchmarks

bench: $(VENV)/.test
	$(BIN)/python benchmarks/train_throughput.py

clean:
	rm -rf $(VENV) runs
