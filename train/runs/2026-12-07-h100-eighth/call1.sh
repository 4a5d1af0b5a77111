#!/usr/bin/env bash
# run as: MIN=7.4 BUDGET=15 bash call1.sh (eighth run, first call): MIN minutes of a BUDGET-minute recipe,
# the seventh run's options unchanged (the full budget is this run's one change)
cd "$(dirname "$0")/.."
export VARCO_FONTS=$PWD/.fonts PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
date
TRAIN_ARGS="--pages 48 --char-weight 3 --char-tiles high --spell 0.5 --qat-from 0.8 --score-every 200 --sdp no-cudnn" \
  bash train/run-h200.sh train "${MIN:?}" "${BUDGET:?}" || { echo "TRAIN FAILED"; tail -25 /tmp/out/train-varco-train.log; }
grep -E 'free_|"acc"' /tmp/varco-train/log.jsonl | tail -4 | cut -c1-600; grep '"lm"' /tmp/varco-train/log.jsonl | tail -1
date
