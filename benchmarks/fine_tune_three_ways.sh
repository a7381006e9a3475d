#!/usr/bin/env bash
# Fine-tuning on data unlike the pretraining data, three ways, same budget:
# from scratch, from a pretrained model with the default anchors, and from
# it with anchors fitted by the dataset doctor; and a fourth, the doctor's
# whole advice for these thin objects: a level-2 pyramid (min_level: 2)
# with anchors fitted for it. Prints the COCO APs.
#
#   bash benchmarks/fine_tune_three_ways.sh        # ~40 min on 2 CPU cores
#
# The pretrained model is the demo's (demo.sh: D0 on the 'shapes' scene),
# trained first unless FT_PRETRAINED names its model_dir. The new data is
# the 'parts' scene (bars, pins, dots: other classes, small and elongated
# objects), FT_NUM_TRAIN training images, FT_EPOCHS epochs, seeded and
# deterministic like the demo. Everything lands in $FT_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${FT_DIR:-finetune_output}"
EPOCHS="${FT_EPOCHS:-8}"
PRETRAINED="${FT_PRETRAINED:-}"

if [ -z "$PRETRAINED" ]; then
  echo "== pretraining: the demo (shapes)"
  DEMO_DIR="$OUT/shapes" DEMO_INSTALL=0 bash demo.sh
  PRETRAINED="$OUT/shapes/model"
fi

echo "== the new data: parts (bars, pins, dots), converted"
python dataset/make_demo_dataset.py --output_dir="$OUT/parts" --scene=parts \
  --image_size=128 --num_train="${FT_NUM_TRAIN:-800}" --num_val=100 --seed=1
for split in train val; do
  python dataset/create_coco_tfrecord.py \
    --image_dir="$OUT/parts/$split/images" \
    --object_annotations_file="$OUT/parts/$split/annotations.json" \
    --output_file_prefix="$OUT/tfrecord/$split" --num_shards=2
done

echo "== the dataset doctor, fitting anchors (levels 3-5, then 2-5)"
python dataset/analyze_dataset.py --file_pattern="$OUT/tfrecord/train-*.tfrecord" \
  --model_name=efficientdet-d0 --hparams=hparams/parts.yaml \
  --output_dir="$OUT/doctor" --fit_anchors
python dataset/analyze_dataset.py --file_pattern="$OUT/tfrecord/train-*.tfrecord" \
  --model_name=efficientdet-d0 --hparams=hparams/parts.yaml,min_level=2 \
  --output_dir="$OUT/doctor_p2" --fit_anchors

train() {  # name, hparams, extra flags
  echo "== fine-tuning: $1"
  python main.py --mode=train_and_eval \
    --training_file_pattern="$OUT/tfrecord/train-*.tfrecord" \
    --validation_file_pattern="$OUT/tfrecord/val-*.tfrecord" \
    --val_json_file="$OUT/parts/val/annotations.json" \
    --model_name=efficientdet-d0 --hparams="$2" --model_dir="$OUT/$1" \
    --train_batch_size=8 --num_epochs="$EPOCHS" --seed=0 --deterministic "${@:3}"
}
train scratch hparams/parts.yaml
train pretrained_default_anchors hparams/parts.yaml --ckpt="$PRETRAINED"
train pretrained_fitted_anchors "hparams/parts.yaml,$OUT/doctor/anchors.yaml" \
  --ckpt="$PRETRAINED"
train pretrained_p2_fitted_anchors \
  "hparams/parts.yaml,min_level=2,$OUT/doctor_p2/anchors.yaml" --ckpt="$PRETRAINED"

python - "$OUT" <<'EOF'
import json, os, sys
out = sys.argv[1]
print("| start | levels | anchors | AP | AP50 | best AP (archive) |\n"
      "|---|---|---|---|---|---|")
for name, start, levels, anchors in (
        ("scratch", "random", "3-5", "default"),
        ("pretrained_default_anchors", "pretrained", "3-5", "default"),
        ("pretrained_fitted_anchors", "pretrained", "3-5", "fitted"),
        ("pretrained_p2_fitted_anchors", "pretrained", "2-5", "fitted")):
    last = json.load(open(os.path.join(out, name, "eval", "eval_results.json")))
    best = json.load(open(os.path.join(out, name, "archive", "best_eval.json")))
    print(f"| {start} | {levels} | {anchors} | {last['AP']:.3f} | {last['AP50']:.3f} | "
          f"{best['AP']:.3f} |")
EOF
