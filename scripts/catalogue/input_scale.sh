#!/usr/bin/env bash
# Catalogue entry input_scale: raw vs min-max vs standardized numeric inputs (channels on wide ranges) vs a norm inside the network or on the input.
#   scripts/catalogue/input_scale.sh              # CPU scale (conf/experiment/input_scale.yaml), then the report
#   scripts/catalogue/input_scale.sh scale=gpu    # the same sweep at GPU size
exec "$(dirname "$0")/run.sh" input_scale "$@"
