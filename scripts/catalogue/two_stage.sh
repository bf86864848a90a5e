#!/usr/bin/env bash
# A catalogue entry whose norms are each tuned over a grid (the entry's report.select, e.g. optim.lr), in two
# stages, then its report:
#   1. the entry's sweep with its first seed only: every grid value of every cell (setting x norm);
#   2. each cell's value chosen on validation (python -m normbench.report.selection), run again with the entry's
#      other seeds only: one multirun over every (cell, seed) with the same launcher, the longest cells first, so
#      the workers end together and a job pays no interpreter, import and data start (about 5 s each on 2 cores).
#   scripts/catalogue/two_stage.sh NAME [overrides...]    the overrides reach both stages (seed=0,1,2,3,4: the seeds)
# ARMS (lines of overrides): the first stage runs the sweep once per line, each line an arm with its own grid (a
# model family and its learning rates), all arms in one multirun (hydra/sweeper=job_list), so the launcher's workers
# are not left idle between arms; a key given on the command line replaces an arm's.
# The report reads both stages: it chooses on the seeds every grid value ran (the first), so the later seeds
# play no part in the choice. The exit code is the first failure's.
set -uo pipefail
[[ $# -ge 1 ]] || { echo "usage: $0 NAME [overrides...]" >&2; exit 2; }
name=$1; shift
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${DIR:-multirun/$name/$(date +%Y-%m-%d_%H-%M-%S)}"  # DIR=...: where both stages go
start=$SECONDS
# the seeds: a seed=... override, else the entry's sweep
args=() seeds=""
for arg in "$@"; do
  if [[ $arg == seed=* ]]; then seeds=${arg#seed=}; else args+=("$arg"); fi
done
set -- "${args[@]}"
single=()  # the overrides that are no sweep (a comma list is one only under -m): enough to read the seeds
for arg in "$@"; do [[ $arg == *,* ]] || single+=("$arg"); done
[[ -n $seeds ]] || seeds=$(python "$root/train.py" "experiment=$name" "${single[@]}" --cfg hydra -p hydra.sweeper.params.seed | tail -1)
[[ $seeds =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "error: $name: no seeds to run (got '$seeds'); pass seed=0,1,2" >&2; exit 2; }
seeds=${seeds//,/ }
first=${seeds%% *}
read -r -a rest <<< "${seeds#"$first"}"
printf -v later '%s,' "${rest[@]}"
arms=()
if [[ -n ${ARMS:-} ]]; then
  given=" "
  for arg in "$@"; do given+="${arg%%=*} "; done
  mkdir -p "$dir"
  while read -r arm; do
    kept=()
    for override in $arm; do [[ $given == *" ${override%%=*} "* ]] || kept+=("$override"); done
    [[ ${#kept[@]} -eq 0 ]] || echo "${kept[*]}"
  done <<< "$ARMS" | awk '!seen[$0]++' > "$dir/arms.txt"
  [[ ! -s $dir/arms.txt ]] || arms=(hydra/sweeper=job_list "hydra.sweeper.jobs=$(realpath "$dir/arms.txt")")
fi
python "$root/train.py" -m "experiment=$name" "hydra.sweep.dir=$dir/stage1" "$@" "${arms[@]}" "seed=$first"
status=$?
echo "$name: stage 1 (seed $first, every grid value) finished in $((SECONDS - start)) s (exit $status)"
python -m normbench.report.selection "$dir/stage1" > "$dir/stage2_cells.txt" || exit $?
if [[ ${#rest[@]} -gt 0 ]]; then
  # one multirun over (cell, seed): a cell's overrides replace those keys of the sweep (normbench.cli.job_list), so
  # the grid and the swept norms give way to the cell's; the launcher's workers take the next job as each one ends
  python "$root/train.py" -m "experiment=$name" "$@" "seed=${later%,}" hydra/sweeper=job_list \
    "hydra.sweeper.jobs=$(realpath "$dir/stage2_cells.txt")" "hydra.sweep.dir=$dir/stage2" || status=$?
fi
echo "$name: both stages finished in $((SECONDS - start)) s (exit $status): $dir"
"$root/scripts/report.sh" "$dir" || status=$?
exit $status
