#!/usr/bin/env bash
# Catalogue entry small_batch: test accuracy vs batch size for each norm at its own best learning rate (Transformer and LSTM): batch norm degrades as the batch shrinks, layer norm stays flat.
#   scripts/catalogue/small_batch.sh              # CPU scale (conf/experiment/small_batch.yaml), two stages, then the report
#   scripts/catalogue/small_batch.sh scale=gpu    # the same protocol at GPU size
# One learning-rate grid per model family, each a half-decade either side of where the shared grid
# {1e-3, 3e-3, 1e-2} put every choice on its edge (the Transformer at 1e-3, the LSTM at 1e-2): two_stage.sh's
# ARMS, both families in one multirun a stage, then the report.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
ARMS="model=transformer optim.lr=3e-4,1e-3,3e-3
model=lstm optim.lr=3e-3,1e-2,3e-2" exec "$here/two_stage.sh" small_batch "$@"
