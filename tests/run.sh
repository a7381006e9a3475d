#!/usr/bin/env bash
# The README's test command: install the package with its test extras, then
# run the whole suite. `.ci/run` calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e ".[test]"
python -m pytest -q "$@"
