#!/usr/bin/env bash
# Catalogue entry batch_stat_fluctuation: distance of batch mean/variance from the running ones over training (Transformer and LSTM on MR, a causal Transformer LM on shakespeare_char), each at its own best learning rate, and the fluctuation against the train/eval gap.
#   scripts/catalogue/batch_stat_fluctuation.sh              # CPU scale (conf/experiment/batch_stat_fluctuation.yaml), two stages each, then one report
#   scripts/catalogue/batch_stat_fluctuation.sh scale=gpu    # the same protocol at GPU size
# One learning-rate grid per model family and task, small_batch's for MR (Transformer {3e-4, 1e-3, 3e-3}, LSTM
# {3e-3, 1e-2, 3e-2}) and causal_leak's for the LM ({1e-3, 3e-3, 1e-2}): each in its own dir, then one report.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="multirun/batch_stat_fluctuation/$(date +%Y-%m-%d_%H-%M-%S)"
status=0
DIR="$dir/transformer" "$here/two_stage.sh" batch_stat_fluctuation data=mr model=transformer optim.lr=3e-4,1e-3,3e-3 "$@" || status=$?
DIR="$dir/lstm" "$here/two_stage.sh" batch_stat_fluctuation data=mr model=lstm optim.lr=3e-3,1e-2,3e-2 "$@" || status=$?
DIR="$dir/lm" "$here/two_stage.sh" batch_stat_fluctuation data=shakespeare_char model=transformer model.causal=true \
  data.eval_tokens=65536 optim.lr=1e-3,3e-3,1e-2 "$@" || status=$?
"$here/../report.sh" "$dir/transformer" "$dir/lstm" "$dir/lm" --out "$dir/report" || status=$?
exit $status
