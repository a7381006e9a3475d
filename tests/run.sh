#!/usr/bin/env bash
# The README's test command: install the package with its test extras, then
# run the whole suite. `.ci/run` calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e ".[test]"
# TF Serving request protos for the serving tests; --no-deps because the
# package requires the full `tensorflow` wheel beside tensorflow-cpu.
python -m pip install --quiet --no-deps tensorflow-serving-api
python -m pytest -q "$@"
