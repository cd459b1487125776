#!/usr/bin/env bash
# Creates .venv with linewatch and the pinned dependency set (constraints.txt). Idempotent: an up-to-date
# .venv is left alone. Set VENV_EXTRAS=test for the test tools.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${VENV_EXTRAS:-}"
stamp=".venv/.linewatch-installed${extras:+-$extras}"
if [[ -f "$stamp" && "$stamp" -nt pyproject.toml && "$stamp" -nt constraints.txt ]]; then
    exit 0
fi
# The machine's pip config lists extra local indexes; pip warns for each one a package is missing from.
quiet_pip() { .venv/bin/pip install -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
python3 -m venv .venv
# torch/torchvision first and exactly: on x86_64 they come from the local wheel store; an open range
# would pull a multi-GB CUDA build from the index.
if [[ "$(uname -m)" == "x86_64" ]]; then
    quiet_pip "torch==2.14.1" "torchvision==0.29.1"
fi
quiet_pip -c constraints.txt -e ".${extras:+[$extras]}"
touch "$stamp"
