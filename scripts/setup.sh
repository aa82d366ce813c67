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
# The browser test (tests/serve/test_browser.py) drives Debian's Chromium through
# Playwright; Playwright's own browser download cannot run here.
if ! command -v chromium > /dev/null && command -v apt-get > /dev/null; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get install -y --no-install-recommends chromium > /dev/null 2>&1 \
        || { $SUDO apt-get update > /dev/null 2>&1 \
             && $SUDO apt-get install -y --no-install-recommends chromium > /dev/null 2>&1; } \
        || echo "warning: could not install chromium; the browser test will be skipped" >&2
fi
touch "$venv/.installed"
echo "environment ready: $venv"
