#!/usr/bin/env bash
# Create the project's virtual environment and install ViPET with its dev tools.
# torch is pinned to 2.13.0: this machine keeps a CPU build of it on disk, while an
# unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
venv="${1:-.venv}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "torch==2.13.0"
"$venv/bin/python" -m pip install --quiet -e ".[dev]"
touch "$venv/.installed"
echo "environment ready: $venv"
