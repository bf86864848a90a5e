#!/usr/bin/env bash
# Catalogue entry small_batch: accuracy vs batch size 2..128 for each norm (Transformer; the LSTM too at scale=gpu): batch norm degrades as the batch shrinks.
#   scripts/catalogue/small_batch.sh              # CPU scale (conf/experiment/small_batch.yaml), then the report
#   scripts/catalogue/small_batch.sh scale=gpu    # the same sweep at GPU size
exec "$(dirname "$0")/run.sh" small_batch "$@"
