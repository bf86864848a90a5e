#!/usr/bin/env bash
# Catalogue entry batch_stat_fluctuation: distance of batch mean/variance from the running ones over training (Transformer and LSTM on MR, a causal Transformer LM on shakespeare_char), each at its own best learning rate, and the fluctuation against the train/eval gap.
#   scripts/catalogue/batch_stat_fluctuation.sh              # CPU scale (conf/experiment/batch_stat_fluctuation.yaml), two stages, then the report
#   scripts/catalogue/batch_stat_fluctuation.sh scale=gpu    # the same protocol at GPU size
# One learning-rate grid per model family and task (two_stage.sh's ARMS: all arms in one multirun a stage): the
# Transformer's {1e-3, 3e-3, 1e-2} (at batch 32 padding and inference_batch_one chose the top edge of {3e-4, 1e-3,
# 3e-3}; at batch 4 train_eval_gap chose 1e-3 and 3e-3), the LSTM's {3e-3, 1e-2, 3e-2} (small_batch's), and for the
# LM half a decade above the Transformer's (causal_leak chose 3e-3 at batch 4 and its top edge, 1e-2, at batch 32).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ARMS="data=mr model=transformer optim.lr=1e-3,3e-3,1e-2
data=mr model=lstm optim.lr=3e-3,1e-2,3e-2
data=shakespeare_char model=transformer model.causal=true data.eval_tokens=65536 optim.lr=3e-3,1e-2,3e-2" \
  exec "$here/two_stage.sh" batch_stat_fluctuation "$@"
