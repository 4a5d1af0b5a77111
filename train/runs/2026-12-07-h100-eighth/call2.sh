#!/usr/bin/env bash
# run as: MIN=7.8 BUDGET=15 bash call2.sh (eighth run, second call): the rest of the budget (resumes with the
# checkpoint's options)
cd "$(dirname "$0")/.."
export VARCO_FONTS=$PWD/.fonts PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
date
TRAIN_ARGS="--sdp no-cudnn --score-every 200" bash train/run-h200.sh train "${MIN:?}" "${BUDGET:?}" || echo "TRAIN FAILED"
grep -E 'free_|"acc"|QAT' /tmp/varco-train/log.jsonl | tail -6 | cut -c1-600; grep '"lm"' /tmp/varco-train/log.jsonl | tail -1
date
