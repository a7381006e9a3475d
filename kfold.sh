#!/usr/bin/env bash
# K-fold cross-validation, then the K models as one ensemble.
#
#   bash kfold.sh 'tfrecord/train-*.tfrecord' 5 runs/kfold \
#       --model_name=efficientdet-d0 --hparams=my.yaml --train_batch_size=8 \
#       --num_epochs=20
#
# 1. For k in 0..K-1: main.py --mode=train_and_eval --fold=k --num_folds=K
#    into <root>/fold-k: trained on the other folds (split by class, the
#    same split every fold: main.py --fold_seed), evaluated on fold k, the
#    best weights kept in <root>/fold-k/archive. Rerunning the command
#    resumes each fold from its newest checkpoint.
# 2. Each fold's AP on its held-out fold, and their mean and spread: the
#    cross-validated estimate of what this recipe scores.
# 3. With KFOLD_TEST='tfrecord/test-*.tfrecord' (and KFOLD_TEST_JSON, its
#    COCO JSON): every fold model and their ensemble (WBF of the K models'
#    detections; KFOLD_FUSION adds flags, e.g. '--tta=flip') evaluated on
#    that held-out test set, report in <root>/ensemble_eval.
# Any further arguments go to every main.py run.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash kfold.sh TRAIN_PATTERN NUM_FOLDS ROOT [main.py flags...]" >&2
  exit 2
fi
TRAIN="$1"; K="$2"; ROOT="$3"; shift 3
HERE="$(cd "$(dirname "$0")" && pwd)"

for ((k = 0; k < K; k++)); do
  echo "== fold $k of $K"
  python "$HERE/main.py" --mode=train_and_eval --training_file_pattern="$TRAIN" \
    --fold="$k" --num_folds="$K" --model_dir="$ROOT/fold-$k" "$@"
done

python - "$ROOT" "$K" <<'PY'
import json, statistics, sys
root, k = sys.argv[1], int(sys.argv[2])
aps = []
for fold in range(k):
    with open(f"{root}/fold-{fold}/archive/best_eval.json", encoding="utf-8") as f:
        best = json.load(f)
    aps.append(best["AP"])
    print(f"fold {fold}: best AP {best['AP']:.4f} on its held-out fold")
spread = statistics.stdev(aps) if len(aps) > 1 else 0.0
print(f"cross-validated AP {statistics.mean(aps):.4f} +- {spread:.4f} ({k} folds)")
PY

if [ -n "${KFOLD_TEST:-}" ]; then
  models=$(for ((k = 0; k < K; k++)); do printf '%s,' "$ROOT/fold-$k/archive"; done)
  models="${models%,}"
  json=()
  if [ -n "${KFOLD_TEST_JSON:-}" ]; then json=(--val_json_file="$KFOLD_TEST_JSON"); fi
  for ((k = 0; k < K; k++)); do
    echo "== fold $k's model on $KFOLD_TEST"
    python "$HERE/model_inspect.py" --runmode=eval_saved_model \
      --saved_model_dir="$ROOT/fold-$k/archive" \
      --validation_file_pattern="$KFOLD_TEST" "${json[@]}" \
      --output_dir="$ROOT/fold-$k/test_eval"
  done
  echo "== the $K models' ensemble on $KFOLD_TEST"
  # shellcheck disable=SC2086  # KFOLD_FUSION is a list of flags
  python "$HERE/model_inspect.py" --runmode=eval_saved_model \
    --saved_model_dir="$models" --validation_file_pattern="$KFOLD_TEST" \
    "${json[@]}" --output_dir="$ROOT/ensemble_eval" ${KFOLD_FUSION:-}
fi
