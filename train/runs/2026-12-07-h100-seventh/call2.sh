#!/usr/bin/env bash
# run as: MIN=5.6 BUDGET=12.5 bash call2.sh, then finish in the same call (05:14 UTC, the same H100; 531 s)
# seventh run, second call: the rest of the budget (resumes with the checkpoint's options), then finish
cd "$(dirname "$0")/../../.."  # ".." where it ran, in .device-train/
export VARCO_FONTS=$PWD/.fonts PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
date
TRAIN_ARGS="--sdp no-cudnn --score-every 200" bash train/run-h200.sh train "${MIN:?}" "${BUDGET:?}" || echo "TRAIN FAILED"
grep -E 'free_|"acc"|QAT' /tmp/varco-train/log.jsonl | tail -6 | cut -c1-600; grep '"lm"' /tmp/varco-train/log.jsonl | tail -1
date
bash train/run-h200.sh finish 2>&1 | tail -30
date; ls -la $OUT
