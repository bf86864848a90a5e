#!/usr/bin/env bash
# Catalogue entry batch_stat_fluctuation: distance of batch mean/variance from the running ones over training, Transformer vs LSTM.
#   scripts/catalogue/batch_stat_fluctuation.sh              # CPU scale (conf/experiment/batch_stat_fluctuation.yaml), then the report
#   scripts/catalogue/batch_stat_fluctuation.sh scale=gpu    # the same sweep at GPU size
exec "$(dirname "$0")/run.sh" batch_stat_fluctuation "$@"
