#!/usr/bin/env bash
# Catalogue entry length_extrapolation: an LSTM trained on 16 tokens of MR tested on 16/32/64, and a character LSTM LM trained on 32-character windows tested on 32/128/512: per-step batch norm has no statistics past the trained length; each norm at its own best learning rate.
#   scripts/catalogue/length_extrapolation.sh              # CPU scale (conf/experiment/length_extrapolation{,_lm}.yaml), two stages each, then one report
#   scripts/catalogue/length_extrapolation.sh scale=gpu    # the same protocol at GPU size
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${DIR:-multirun/length_extrapolation/$(date +%Y-%m-%d_%H-%M-%S)}"  # DIR=...: where it all goes
status=0
DIR="$dir/mr" "$here/two_stage.sh" length_extrapolation "$@" || status=$?
DIR="$dir/lm" "$here/two_stage.sh" length_extrapolation_lm "$@" || status=$?
"$here/../report.sh" "$dir/mr" "$dir/lm" --out "$dir/report" || status=$?
exit $status
