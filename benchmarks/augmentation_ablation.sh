#!/usr/bin/env bash
# Augmentation on a small training set, same budget: the demo's recipe
# (flip + scale jitter) alone, then with each of RandAugment, AutoAugment
# v0, Mosaic, MixUp and CutMix. Prints the COCO APs on held-out images.
#
#   bash benchmarks/augmentation_ablation.sh       # ~30 min on 2 CPU cores
#
# Data: the demo's shapes scene, AUG_NUM_TRAIN (80) training images and 200
# validation images. Training: D0 from scratch with hparams/demo.yaml, 6
# "epochs" of 800 images (10 passes over the 80) at batch 8, warm-up 50
# steps, AUG_SEED (0) for initialisation, input order and augmentation
# draws, deterministic; every run sees the same number of training images.
# Everything lands in $AUG_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${AUG_DIR:-augmentation_output}"
SEED="${AUG_SEED:-0}"
ROWS="${AUG_ROWS:-none randaug v0 mosaic mixup cutmix}"

python dataset/make_demo_dataset.py --output_dir="$OUT/shapes" --image_size=128 \
  --num_train="${AUG_NUM_TRAIN:-80}" --num_val=200 --seed=0
for split in train val; do
  python dataset/create_coco_tfrecord.py \
    --image_dir="$OUT/shapes/$split/images" \
    --object_annotations_file="$OUT/shapes/$split/annotations.json" \
    --output_file_prefix="$OUT/tfrecord/$split" --num_shards=2
done

overrides() {  # row name -> hparams items
  case "$1" in
    none) echo "" ;;
    randaug) echo ",autoaugment_policy=randaug" ;;
    v0) echo ",autoaugment_policy=v0" ;;
    mosaic) echo ",mosaic_prob=0.5" ;;
    mixup) echo ",mixup_prob=0.5" ;;
    cutmix) echo ",cutmix_prob=0.5" ;;
    *) echo "unknown row $1" >&2; exit 2 ;;
  esac
}

for row in $ROWS; do
  echo "== $row"
  python main.py --mode=train_and_eval \
    --training_file_pattern="$OUT/tfrecord/train-*.tfrecord" \
    --validation_file_pattern="$OUT/tfrecord/val-*.tfrecord" \
    --val_json_file="$OUT/shapes/val/annotations.json" \
    --model_name=efficientdet-d0 \
    --hparams="hparams/demo.yaml,lr_warmup_epoch=0.5$(overrides "$row")" \
    --model_dir="$OUT/seed$SEED/$row" --train_batch_size=8 \
    --num_examples_per_epoch=800 --num_epochs=6 --seed="$SEED" --deterministic
done

python - "$OUT/seed$SEED" $ROWS <<'PY'
import json, os, sys
out, rows = sys.argv[1], sys.argv[2:]
print("| augmentation | AP | AP50 | best AP (archive) |\n|---|---|---|---|")
for row in rows:
    last = json.load(open(os.path.join(out, row, "eval", "eval_results.json")))
    best = json.load(open(os.path.join(out, row, "archive", "best_eval.json")))
    print(f"| {row} | {last['AP']:.3f} | {last['AP50']:.3f} | {best['AP']:.3f} |")
PY
