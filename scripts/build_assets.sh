#!/usr/bin/env bash
# Reproduce the bundled runs in assets/: train -> (train-prior) -> evaluate -> export -> copy.
#
#   scripts/build_assets.sh                    # every bundled run, in priority order
#   scripts/build_assets.sh mnist-vae smileys-btcvae
#
# Each stage is resumable and skipped when its output is already newer than the weights it was made
# from: a killed training resumes from its checkpoint (`train --resume`), and a re-run after a finished
# build only copies. Trainings live in $SCRATCH (default runs/bundled/, gitignored, holds the resume
# state checkpoint.pt); only the explorer's files are copied into assets/<name>/.
#
# Environment:
#   SCRATCH   scratch folder for the trainings            (default runs/bundled)
#   ASSETS    destination                                  (default assets)
#   NICE      niceness of every step                       (default 10: the build shares the machine)
#   DEVICE    device for evaluate / export / train-prior   (default cpu: the numbers in assets/README.md)
#   EXTRA_STEPS  train this many steps more than the preset (0 = exactly the bundled recipe)
#   DECODER_WEIGHTS  how decoder.onnx stores its layer weights (default float16: half the bytes a page
#                downloads to decode in the browser, computed in float32; docs/run-format.md)
#   TRAIN_ONLY   1 = only the training stage (lets another process evaluate/export finished runs meanwhile)
#   THREADS   torch threads of every step                  (default 1: as the bundled runs were trained)
set -euo pipefail
cd "$(dirname "$0")/.."

SCRATCH=${SCRATCH:-runs/bundled}
ASSETS=${ASSETS:-assets}
NICE=${NICE:-10}
DEVICE=${DEVICE:-cpu}
EXTRA_STEPS=${EXTRA_STEPS:-0}
TRAIN_ONLY=${TRAIN_ONLY:-0}
DECODER_WEIGHTS=${DECODER_WEIGHTS:-float16}
PY="nice -n $NICE python -m training"
# A CPU training's float sums depend on how many threads share them: with the thread count a run was
# trained with (its card in assets/README.md says which), a rebuild reproduces its weights bit for bit.
export OMP_NUM_THREADS=${THREADS:-1}

# name | preset | evaluate flags | export flags | train-prior flags ("-" = not a VQ-VAE)
# Evaluation settings are the ones the model card reports: 1,000 held-out test images; on dsprites and
# smileys the disentanglement metrics under the full disentanglement_lib protocol (scale 1: its sample
# counts, 20 bins, seed 0; DCI's classifiers on 2 processes), with MIG and FactorVAE again under evaluation
# seeds 1 and 2 for their mean. The smileys run exports its labelled test faces only (--split test: the
# faces its attribute vectors are computed from, resampled to the preset's smile/glasses correlation).
# On MNIST (binarised test images, its presets' data.options.binarize = "dynamic") the importance-weighted
# NLL with k = 1000 for the VAE and, for the VAE and the AE, the share of decoded N(0, I) draws a digit
# classifier reads with confidence.
RUNS=(
  "mnist-vae|bundled_mnist_vae|--k 1000 --n-test 1000 --sample-quality|--n 5000|-"
  "mnist-ae|bundled_mnist_ae|--k 0 --n-test 1000 --sample-quality|--n 5000|-"
  "dsprites-btcvae|bundled_dsprites_btcvae|--k 0 --n-test 1000 --jobs 2 --extra-seeds 1,2|--n 5000|-"
  "smileys-btcvae|bundled_smileys_btcvae|--k 0 --n-test 1000 --jobs 2 --extra-seeds 1,2|--n 5000 --split test|-"
  "dsprites-vae|bundled_dsprites_vae|--k 0 --n-test 1000 --jobs 2 --extra-seeds 1,2|--n 5000|-"
  "mnist-vqvae|bundled_mnist_vqvae|--k 0 --n-test 1000|--n 5000|--steps 2000 --layers 8 --channels 64 --n-train 9000 --n-test 1000"
)

# Files the explorer reads (docs/run-format.md); checkpoint.pt and the per-step image history stay behind.
SHIP=(config.json model.safetensors metrics.json metrics.jsonl latents.npz attributes.json decoder.onnx
      timeline.npz prior.safetensors prior.json samples.png reconstructions.png DONE)

log() { echo "[build_assets $(date +%H:%M:%S)] $*"; }

# True when $1 exists and is newer than $2 (an output made from the current weights).
fresh() { [[ -f "$1" && -f "$2" && ! "$1" -ot "$2" ]]; }

preset_steps() { python -c "import json,sys; print(json.load(open(sys.argv[1]))['train']['steps'])" "$1"; }

train_stage() {
  local dir=$1 preset=$2 steps
  steps=$(( $(preset_steps "training/configs/$preset.json") + EXTRA_STEPS ))
  if [[ -f "$dir/DONE" && "$(tr -dc 0-9 < "$dir/DONE")" -ge "$steps" ]]; then
    log "$dir: trained ($steps steps)"; return
  fi
  if [[ -f "$dir/checkpoint.pt" ]]; then
    log "$dir: resuming to step $steps"
    $PY train --out "$dir" --resume --steps "$steps" --quiet
  else
    log "$dir: training $preset for $steps steps"
    $PY train --config "training/configs/$preset.json" --out "$dir" --steps "$steps" --quiet --overwrite
  fi
}

build_one() {
  local name=$1 preset=$2 eval_flags=$3 export_flags=$4 prior_flags=$5
  local dir="$SCRATCH/$name"
  mkdir -p "$SCRATCH"
  train_stage "$dir" "$preset"
  if [[ "$TRAIN_ONLY" == 1 ]]; then return; fi
  if [[ "$prior_flags" != "-" ]] && ! fresh "$dir/prior.safetensors" "$dir/model.safetensors"; then
    log "$dir: train-prior"
    # shellcheck disable=SC2086
    $PY train-prior "$dir" $prior_flags --device "$DEVICE"
  fi
  if ! fresh "$dir/metrics.json" "$dir/model.safetensors" \
     || { [[ -f "$dir/prior.safetensors" ]] && ! fresh "$dir/metrics.json" "$dir/prior.safetensors"; }; then
    log "$dir: evaluate $eval_flags"
    # shellcheck disable=SC2086
    $PY evaluate "$dir" $eval_flags --device "$DEVICE"
  fi
  if ! fresh "$dir/latents.npz" "$dir/model.safetensors"; then
    log "$dir: export $export_flags --decoder-weights $DECODER_WEIGHTS"
    # shellcheck disable=SC2086
    $PY export "$dir" $export_flags --decoder-weights "$DECODER_WEIGHTS" --device "$DEVICE"
  else
    # Freshness cannot tell how an existing decoder.onnx stores its weights; the decoder alone exports in
    # seconds, to the same bytes when nothing changed.
    log "$dir: export --decoder-only --decoder-weights $DECODER_WEIGHTS"
    $PY export "$dir" --decoder-only --decoder-weights "$DECODER_WEIGHTS"
  fi
  log "$dir -> $ASSETS/$name"
  rm -rf "$ASSETS/$name.tmp" && mkdir -p "$ASSETS/$name.tmp"
  for f in "${SHIP[@]}"; do
    if [[ -f "$dir/$f" ]]; then cp "$dir/$f" "$ASSETS/$name.tmp/"; fi
  done
  # Swap in the complete folder at once, so assets/ never holds a half-copied run.
  rm -rf "$ASSETS/$name" && mv "$ASSETS/$name.tmp" "$ASSETS/$name"
}

wanted=("$@")
for spec in "${RUNS[@]}"; do
  IFS='|' read -r name preset eval_flags export_flags prior_flags <<< "$spec"
  if [[ ${#wanted[@]} -gt 0 && ! " ${wanted[*]} " == *" $name "* ]]; then continue; fi
  build_one "$name" "$preset" "$eval_flags" "$export_flags" "$prior_flags"
done
du -sh "$ASSETS"/* 2>/dev/null || true
