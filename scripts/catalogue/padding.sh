#!/usr/bin/env bash
# Catalogue entry padding: the same tokens with more padding (data.pad_to 0/64/128): naive batch norm counts the pads, masked does not.
#   scripts/catalogue/padding.sh              # CPU scale (conf/experiment/padding.yaml), then the report
#   scripts/catalogue/padding.sh scale=gpu    # the same sweep at GPU size
exec "$(dirname "$0")/run.sh" padding "$@"
