#!/usr/bin/env bash
# Catalogue entry small_batch: test accuracy vs batch size for each norm at its own best learning rate (Transformer and LSTM): batch norm degrades as the batch shrinks, layer norm stays flat.
#   scripts/catalogue/small_batch.sh              # CPU scale (conf/experiment/small_batch.yaml), two stages, then the report
#   scripts/catalogue/small_batch.sh scale=gpu    # the same protocol at GPU size
exec "$(dirname "$0")/two_stage.sh" small_batch "$@"
