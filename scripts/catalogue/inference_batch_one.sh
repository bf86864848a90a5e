#!/usr/bin/env bash
# Catalogue entry inference_batch_one: test at batch 1 with running and with batch statistics, each norm at its own best learning rate.
#   scripts/catalogue/inference_batch_one.sh              # CPU scale (conf/experiment/inference_batch_one.yaml), two stages, then the report
#   scripts/catalogue/inference_batch_one.sh scale=gpu    # the same protocol at GPU size
exec "$(dirname "$0")/two_stage.sh" inference_batch_one "$@"
