#!/usr/bin/env bash
# One command for the whole job on the built-in demo dataset:
#   install -> generate data -> convert to TFRecords -> train + evaluate
#   -> export a SavedModel -> infer on a folder, drawing boxes.
# Everything lands in $DEMO_DIR (default ./demo_output). Tunable:
#   DEMO_EPOCHS (default 6), DEMO_BATCH (default 8), DEMO_NUM_TRAIN (1600),
#   DEMO_NUM_VAL (64), DEMO_INSTALL (default 1; 0 skips the install).
# Training runs with --seed=0 --deterministic: the same initialisation, input
# order, augmentation and arithmetic every run, so every run on a machine
# ends with the same weights and prints the same AP.
set -euo pipefail
cd "$(dirname "$0")"
OUT="${DEMO_DIR:-demo_output}"
EPOCHS="${DEMO_EPOCHS:-6}"
BATCH="${DEMO_BATCH:-8}"

echo "== 1/6 install"
if [ "${DEMO_INSTALL:-1}" != 0 ]; then
  python -m pip install --quiet -e ".[plots]"
fi

# The images are generated at the size the network reads (one home: the
# hparams), so nothing is resized and the object sizes fit its anchors.
SIZE=$(python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["image_size"])' \
  hparams/demo.yaml)

echo "== 2/6 generate the shapes dataset (${SIZE}x${SIZE})"
python dataset/make_demo_dataset.py --output_dir="$OUT/data" --seed=0 \
  --image_size="$SIZE" --num_train="${DEMO_NUM_TRAIN:-1600}" \
  --num_val="${DEMO_NUM_VAL:-64}"

echo "== 3/6 convert to TFRecords"
for split in train val; do
  python dataset/create_coco_tfrecord.py \
    --image_dir="$OUT/data/$split/images" \
    --object_annotations_file="$OUT/data/$split/annotations.json" \
    --output_file_prefix="$OUT/tfrecord/$split" --num_shards=2
done

echo "== 4/6 train and evaluate (D0 at ${SIZE}x${SIZE}, seeded)"
python main.py --mode=train_and_eval \
  --training_file_pattern="$OUT/tfrecord/train-*.tfrecord" \
  --validation_file_pattern="$OUT/tfrecord/val-*.tfrecord" \
  --val_json_file="$OUT/data/val/annotations.json" \
  --model_name=efficientdet-d0 --hparams=hparams/demo.yaml \
  --model_dir="$OUT/model" --train_batch_size="$BATCH" \
  --num_epochs="$EPOCHS" --seed=0 --deterministic

echo "== 5/6 export a SavedModel (serving_default, serving_bytes, predict)"
python model_inspect.py --runmode=saved_model --model_name=efficientdet-d0 \
  --hparams=hparams/demo.yaml --ckpt_path="$OUT/model" \
  --saved_model_dir="$OUT/saved_model"

echo "== 6/6 infer on the validation images, drawing boxes"
python model_inspect.py --runmode=saved_model_infer \
  --saved_model_dir="$OUT/saved_model" \
  --input_image="$OUT/data/val/images" \
  --output_image_dir="$OUT/predictions" --min_score_thresh=0.3

python -c 'import json, sys; r = json.load(open(sys.argv[1]))
print("done: validation AP {:.3f}, AP50 {:.3f} (COCO, {})".format(r["AP"], r["AP50"], sys.argv[1]))' \
  "$OUT/model/eval/eval_results.json"
echo "drawn images in $OUT/predictions"
echo "where the model fails: $OUT/model/eval/ (pr_curves.png, confusion_matrix.png, f1_vs_threshold.png, per_class.md, errors/) and $OUT/model/training_curves.png"
