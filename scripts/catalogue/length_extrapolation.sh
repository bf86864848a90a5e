#!/usr/bin/env bash
# Catalogue entry length_extrapolation: LSTM trained on 16 tokens, tested on 16/32/64: per-step batch norm has no statistics past 16.
#   scripts/catalogue/length_extrapolation.sh              # CPU scale (conf/experiment/length_extrapolation.yaml), then the report
#   scripts/catalogue/length_extrapolation.sh scale=gpu    # the same sweep at GPU size
exec "$(dirname "$0")/run.sh" length_extrapolation "$@"
