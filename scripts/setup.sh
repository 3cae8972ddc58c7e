#!/usr/bin/env bash
# Creates .venv in the repo root and installs the pinned requirements (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
stamp=.venv/.installed-$(cat requirements.txt requirements-dev.txt requirements-nodeps.txt pyproject.toml | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -r requirements-dev.txt
  # codebleu declares tree-sitter<0.23; it runs on our 0.26 (see requirements-nodeps.txt).
  .venv/bin/pip install -q --no-deps -r requirements-nodeps.txt
  .venv/bin/pip install -q --no-deps -e .
  touch "$stamp"
fi
