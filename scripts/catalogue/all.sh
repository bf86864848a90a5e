#!/usr/bin/env bash
# Every catalogue entry for the given norms, then the trained scorecard (python -m normbench.report.scorecard): for
# each norm, each entry's headline effect relative to layer norm.
#   scripts/catalogue/all.sh 'hydra.searchpath=[file://my_conf]' norm=dyt,batch_masked [overrides...]
#   ENTRIES="small_batch padding" scripts/catalogue/all.sh norm=rms          # some entries only
# Layer norm, the reference, joins the norms when they lack it. Each entry runs its own recipe
# (scripts/catalogue/<entry>.sh: its sweep at CPU scale, or scale=gpu, its two stages and its report) with the norms
# and the overrides given, one entry after another, into DIR/<entry>/ (DIR: default multirun/catalogue/<time>); the
# scorecard goes to DIR/scorecard.md and DIR/scorecard.csv. A norm of your own joins by a yaml of its own (with a
# `sync: false` key, which the ddp entry sweeps): norm._target_= or +norm.<arg>= would apply to layer norm too.
# At CPU scale the whole catalogue takes more than an hour (the built-in set: 77 min of sweeps on 2 cores).
# The exit code is the first failure's.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$here/../../src"
known=()
for recipe in "$here"/*.sh; do
  entry=$(basename "$recipe" .sh)
  [[ $entry == all || $entry == run || $entry == two_stage ]] || known+=("$entry")
done
printf -v accepted '%s, ' "${known[@]}"
read -r -a entries <<< "${ENTRIES:-${known[*]}}"
for entry in "${entries[@]}"; do
  [[ " ${known[*]} " == *" $entry "* ]] || { echo "error: ENTRIES has '$entry'; accepted: ${accepted%, }" >&2; exit 2; }
done
args=() norms=""
for arg in "$@"; do
  case $arg in
    norm=*) norms=${arg#norm=} ;;
    norm._target_=* | +norm.* | ++norm.*)
      echo "error: $arg would apply to every norm of the list, layer norm too; accepted: your class in a yaml of" \
        "its own, 'hydra.searchpath=[file://my_conf]' norm=<its name> (README: Bring your own norm)" >&2
      exit 2 ;;
    *) args+=("$arg") ;;
  esac
done
[[ $norms =~ ^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$ ]] || {
  echo "error: all.sh needs norm=<names> (comma-separated, e.g. norm=dyt,batch_masked), got '${norms}'; layer" \
    "norm joins them as the reference" >&2
  exit 2
}
[[ ,$norms, == *,layer,* ]] || norms="$norms,layer"
dir="${DIR:-multirun/catalogue/$(date +%Y-%m-%d_%H-%M-%S)}"
status=0
start=$SECONDS
for entry in "${entries[@]}"; do
  DIR="$dir/$entry" "$here/$entry.sh" "norm=$norms" "${args[@]}"
  code=$?
  [[ $status -ne 0 ]] || status=$code
  echo "all.sh: $entry done after $((SECONDS - start)) s in all (exit $code): $dir/$entry"
done
PYTHONPATH="$src${PYTHONPATH:+:$PYTHONPATH}" python -m normbench.report.scorecard "$dir" --out "$dir"
code=$?
[[ $status -ne 0 ]] || status=$code
exit $status
