#!/usr/bin/env bash
# Catalogue entry causal_leak: causal Transformer: batch statistics carry later tokens into earlier outputs (probe/causal_leak).
#   scripts/catalogue/causal_leak.sh              # CPU scale (conf/experiment/causal_leak.yaml), then the report
#   scripts/catalogue/causal_leak.sh scale=gpu    # the same sweep at GPU size
exec "$(dirname "$0")/run.sh" causal_leak "$@"
