#!/usr/bin/env bash
# Catalogue entry train_eval_gap: accuracy with running vs with batch statistics per batch size, each norm at its own best learning rate (batch_renorm, power too; the LSTM too at scale=gpu).
#   scripts/catalogue/train_eval_gap.sh              # CPU scale (conf/experiment/train_eval_gap.yaml), two stages, then the report
#   scripts/catalogue/train_eval_gap.sh scale=gpu    # the same protocol at GPU size
exec "$(dirname "$0")/two_stage.sh" train_eval_gap "$@"
