#!/usr/bin/env bash
# The README's test command: install the package with its test extras, then
# run the whole suite. `.ci/run` calls exactly this script.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet -e ".[test]"
# TF Serving request protos for the serving tests; --no-deps because the
# package requires the full `tensorflow` wheel beside tensorflow-cpu.
python -m pip install --quiet --no-deps tensorflow-serving-api
# Two processes, each taking whole test files (module fixtures such as a
# trained model are built once): a single process keeps one of two cores
# busy on average (tracing and graph building are single-threaded), two
# take the suite from ~23 to ~13 minutes on 2 cores. EFFICIENTDET_TEST_WORKERS
# sets their number; 0 runs everything in this process.
python -m pytest -q -n "${EFFICIENTDET_TEST_WORKERS:-2}" --dist loadfile "$@"
