#!/usr/bin/env bash
# Reproduce one shipped weight file from ../shared/data with simulated clicks only.
#   scripts/reproduce_weights.sh crack|spalling|rust [OUT_DIR]
# CPU settings (2 cores): 64 px crops, 2 crops per click, 8 epochs of 50 steps of batch 32,
# lr 1e-3 (the paper: 1e-4 on a pretrained encoder; here the encoder starts from scratch).
# On a GPU raise them towards the paper's (320 px crops, 5 per click, full epochs):
#   CROP=320 PER_CLICK=5 EPOCHS=20 STEPS=0 scripts/reproduce_weights.sh crack
set -euo pipefail
defect=${1:?usage: $0 crack|spalling|rust [OUT_DIR]}
out=${2:-weights}
runs=${RUNS:-runs}
crop=${CROP:-64}
lr=${LR:-1e-3}
per_click=${PER_CLICK:-2}
epochs=${EPOCHS:-8}
steps=${STEPS:-50}
data=${DEFECTCAM_SHARED_DATA:-$(cd "$(dirname "$0")/.." && pwd)/../shared/data}
mkdir -p "$runs" "$out"
defectcam simulate --defect "$defect" --split train --seed 0 --crop-size "$crop" \
  --data-root "$data" --out "$runs/$defect.train-clicks.xml"
step_arg=()
if [ "$steps" != "0" ]; then step_arg=(--max-steps-per-epoch "$steps"); fi
defectcam train --defect "$defect" --clicks "$runs/$defect.train-clicks.xml" --images "$data" \
  --out "$out/$defect.safetensors" --crop-size "$crop" --crops-per-click "$per_click" \
  --epochs "$epochs" "${step_arg[@]}" --micro-batch 32 --lr "$lr" --seed 0 --no-progress
