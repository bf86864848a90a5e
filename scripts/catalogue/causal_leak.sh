#!/usr/bin/env bash
# Catalogue entry causal_leak: in a causal character LM, the bits per character batch statistics buy in training (they carry future tokens) and lose at generation, at batch sizes 4 and 32, each norm at its best learning rate.
#   scripts/catalogue/causal_leak.sh              # CPU scale (conf/experiment/causal_leak.yaml), two stages, then the report
#   scripts/catalogue/causal_leak.sh scale=gpu    # the same protocol at GPU size
exec "$(dirname "$0")/two_stage.sh" causal_leak "$@"
