#!/usr/bin/env bash
# One catalogue entry end to end: its sweep (python train.py -m experiment=NAME), then its report.
#   scripts/catalogue/run.sh NAME [overrides...]    e.g. scale=gpu, seed=0,1,2,3,4, hydra/launcher=joblib
# The report runs even when some jobs failed (it lists them); the exit code is the sweep's.
set -uo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 NAME [overrides...]" >&2; exit 2; }
name=$1; shift
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${DIR:-multirun/$name/$(date +%Y-%m-%d_%H-%M-%S)}"  # DIR=...: where the sweep goes
start=$SECONDS
python "$root/train.py" -m "experiment=$name" "hydra.sweep.dir=$dir" "$@"
status=$?
echo "$name: sweep finished in $((SECONDS - start)) s (exit $status): $dir"
"$root/scripts/report.sh" "$dir" || status=$?
exit $status
