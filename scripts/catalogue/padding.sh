#!/usr/bin/env bash
# Catalogue entry padding: random vs length-bucketed batches, and the test set padded as in training vs to 128 tokens: naive batch norm counts the pads, masked does not; each norm at its own best learning rate.
#   scripts/catalogue/padding.sh              # CPU scale (conf/experiment/padding.yaml), two stages, then the report
#   scripts/catalogue/padding.sh scale=gpu    # the same protocol at GPU size
exec "$(dirname "$0")/two_stage.sh" padding "$@"
