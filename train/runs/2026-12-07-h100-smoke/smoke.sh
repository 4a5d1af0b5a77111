#!/usr/bin/env bash
# the seventh run's options on CUDA, without a run: the step's profile with all of them (QAT on), scores of 32
# scenes during 40 steps (their time), then finish on that checkpoint with 8 held-out scenes (QAT's weights
# against the converter's on the GPU, every step of finish with a QAT checkpoint). It ran as
# .device-train/smoke.sh (carry [".fonts", ".gl", ".device-train"]); kept here, it finds the repository's root
# from its own place.
cd "$(dirname "$0")/../../.."
export VARCO_FONTS=$PWD/.fonts PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
ALL="--pages 48 --char-weight 3 --char-tiles high --spell 0.5 --sdp no-cudnn"
date
timeout 120 python3 train/train.py --out /tmp/p --profile 10 $ALL --qat-from 0 > $OUT/profile.txt 2>&1; echo "profile rc=$?"
grep -E "QAT|profile:|Self CPU time|Self CUDA time|Error" $OUT/profile.txt | head
date
timeout 160 python3 train/train.py --out /tmp/s --steps 40 --probe-every 100 $ALL --qat-from 0.5 --score-every 3 \
  > $OUT/smoke.txt 2>&1; echo "smoke rc=$?"
grep -E "QAT|free_|stopped|Error|error" $OUT/smoke.txt | cut -c1-300; grep '"step": 25' $OUT/smoke.txt | cut -c1-400
date
CK=/tmp/s EVAL_SCENES=8 timeout 200 bash train/run-h200.sh finish > $OUT/finish.txt 2>&1; echo "finish rc=$?"
grep -v "^\s*$" $OUT/finish.txt | tail -25
rm -f $OUT/shard-*.bin; rm -rf $OUT/llm8
date
