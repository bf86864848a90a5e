#!/usr/bin/env bash
# Catalogue entry ddp: 2 processes (gloo on CPU): local vs synced (norm.sync) batch statistics at per-process batch 4/16, and the sync's cost.
#   scripts/catalogue/ddp.sh              # CPU scale (conf/experiment/ddp.yaml), then the report
#   scripts/catalogue/ddp.sh scale=gpu    # the same sweep at GPU size
exec "$(dirname "$0")/run.sh" ddp "$@"
