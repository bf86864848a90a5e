#!/usr/bin/env bash
# Catalogue entry train_eval_gap: accuracy with running vs with batch statistics, per batch size 4/16/64 (batch_renorm, power too; the LSTM too at scale=gpu).
#   scripts/catalogue/train_eval_gap.sh              # CPU scale (conf/experiment/train_eval_gap.yaml), then the report
#   scripts/catalogue/train_eval_gap.sh scale=gpu    # the same sweep at GPU size
exec "$(dirname "$0")/run.sh" train_eval_gap "$@"
