#!/usr/bin/env bash
# Catalogue entry inference_batch_one: test at batch 1 with running and with batch statistics.
#   scripts/catalogue/inference_batch_one.sh              # CPU scale (conf/experiment/inference_batch_one.yaml), then the report
#   scripts/catalogue/inference_batch_one.sh scale=gpu    # the same sweep at GPU size
exec "$(dirname "$0")/run.sh" inference_batch_one "$@"
