#!/usr/bin/env bash
# run as: MIN=7.4 BUDGET=12.5 bash call1.sh (05:06 UTC 2026-12-07, one H100; 483 s)
# seventh run, first call: MIN minutes of a BUDGET-minute recipe with the new options (should they fail on CUDA
# at once, the sixth run's options and QAT instead)
cd "$(dirname "$0")/../../.."  # ".." where it ran, in .device-train/
export VARCO_FONTS=$PWD/.fonts PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
date
if ! TRAIN_ARGS="--pages 48 --char-weight 3 --char-tiles high --spell 0.5 --qat-from 0.8 --score-every 200 --sdp no-cudnn" \
  bash train/run-h200.sh train "${MIN:?}" "${BUDGET:?}"; then
  echo "TRAIN FAILED"; tail -25 $OUT/train-varco-train.log; cp $OUT/train-varco-train.log $OUT/failed.log
  rm -rf /tmp/varco-train
  NO_CHECK=1 TRAIN_ARGS="--pages 48 --char-weight 3 --char-tiles high --qat-from 0.8 --sdp no-cudnn" \
    bash train/run-h200.sh train "$(python3 -c "print(${MIN} - 1.2)")" "${BUDGET}"
fi
grep -E 'free_|"acc"' /tmp/varco-train/log.jsonl | tail -4 | cut -c1-600; grep '"lm"' /tmp/varco-train/log.jsonl | tail -1
date
