#!/usr/bin/env bash
# run as: bash call3.sh (eighth run, third call): finish (export, convert, held-out answers, scores)
cd "$(dirname "$0")/.."
export VARCO_FONTS=$PWD/.fonts PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
date
bash train/run-h200.sh finish 2>&1 | tail -30
date; ls -la /tmp/out
