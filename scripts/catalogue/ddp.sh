#!/usr/bin/env bash
# Catalogue entry ddp: 2 processes (gloo on CPU): local vs synced (norm.sync) batch statistics at per-process batch 4/16, each at its own best learning rate, and the sync's cost.
#   scripts/catalogue/ddp.sh              # CPU scale (conf/experiment/ddp.yaml), two stages, then the report
#   scripts/catalogue/ddp.sh scale=gpu    # the same protocol at GPU size
# One job at a time (Hydra's basic launcher, which the ddp strategy needs to start its second process): each job is
# already 2 processes, and a second job would distort train_step_s.
exec "$(dirname "$0")/two_stage.sh" ddp "$@"
