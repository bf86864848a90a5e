#!/usr/bin/env bash
# Mutation check of the modules whose numbers the report rests on (not part of CI). mutmut changes one operator or
# constant at a time; a mutant the fast tests (`pytest -m "not slow"`) do not fail on is a bug they would not catch.
# It runs in a temporary git worktree of HEAD (commit first), so the working tree is never mutated.
#
#   pip install -e ".[dev,mutation]"
#   scripts/mutation.sh --sample 80        # a random sample of the mutants (seeded): the score with its 95% CI;
#                                          # about a minute a mutant on 2 cores
#   scripts/mutation.sh --sample 80 --jobs 2 --seed 7   # another sample, two mutants at a time
#   scripts/mutation.sh                    # every mutant (~860 in the modules below: about 15 core-hours)
#   scripts/mutation.sh --sample 20 src/normbench/instruments/probes.py    # other modules
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
sample=0 jobs=1 seed=20261204
while [[ ${1:-} == --* ]]; do
  case $1 in
    --sample) sample=$2 ;;
    --jobs) jobs=$2 ;;   # sampled mutants tested J at a time, each in its own worktree (one torch thread each)
    --seed) seed=$2 ;;   # another seed: another sample
    *) echo "error: $1 is unknown; accepted: --sample N, --jobs J, --seed S" >&2; exit 2 ;;
  esac
  shift 2
done
modules=("$@")
if [[ ${#modules[@]} -eq 0 ]]; then
  modules=(src/normbench/norms.py src/normbench/instruments/probes.py src/normbench/run/checkpointing.py
    src/normbench/report/confidence.py)
fi
paths="$(IFS=,; echo "${modules[*]}")"
work="$(mktemp -d)"
trees=("$work")
git -C "$root" worktree add --detach --quiet "$work" HEAD
trap 'for tree in "${trees[@]}"; do git -C "$root" worktree remove --force "$tree"; done' EXIT
cd "$work"
export NORMBENCH_CACHE="${NORMBENCH_CACHE:-$root/.cache/normbench}"
fast=(python -m pytest -x -q -p no:cacheprovider -m "not slow" tests/)

if [[ $sample -eq 0 ]]; then
  export PYTHONPATH="$work/src"
  mutmut run --paths-to-mutate "$paths" --tests-dir tests --runner "${fast[*]}" || true  # non-zero while any survive
  mutmut results || true
  exit 0
fi
# number every mutant without testing any (a runner that always passes), then test a seeded sample of them
PYTHONPATH="$work/src" mutmut run --paths-to-mutate "$paths" --tests-dir tests --runner true > /dev/null 2>&1 || true
ids=$(python - "$sample" "$seed" <<'PY'
import random, sqlite3, sys

ids = [row[0] for row in sqlite3.connect(".mutmut-cache").execute("select id from Mutant")]
print(" ".join(map(str, sorted(random.Random(int(sys.argv[2])).sample(ids, min(int(sys.argv[1]), len(ids)))))))
PY
)
read -r -a ids <<< "$ids"
[[ $jobs -eq 1 ]] || export OMP_NUM_THREADS=1  # J pytest processes side by side: one torch thread each
test_share() {  # worker $1 of $jobs: every jobs-th sampled mutant, in its own worktree; "killed|survived ID" lines
  local tree=$1 worker=$2 i
  cd "$tree"
  for ((i = worker; i < ${#ids[@]}; i += jobs)); do
    mutmut apply "${ids[i]}" > /dev/null
    if PYTHONPATH="$tree/src" "${fast[@]}" > /dev/null 2>&1; then echo "survived ${ids[i]}"; else echo "killed ${ids[i]}"; fi
    git checkout --quiet -- src/
  done > "$work/outcome.$worker"
}
for ((worker = 1; worker < jobs; worker++)); do
  tree="$(mktemp -d)"
  git -C "$root" worktree add --detach --quiet "$tree" HEAD
  trees+=("$tree")
  cp "$work/.mutmut-cache" "$tree/"
  test_share "$tree" "$worker" &
done
test_share "$work" 0
wait
cd "$work"
survivors=$(cat outcome.* | awk '$1 == "survived" {print $2}' | sort -n)
for id in $survivors; do mutmut show "$id"; done
killed=$(cat outcome.* | grep -c '^killed' || true)
python - "$killed" "${#ids[@]}" "$seed" <<'PY'
import sys

from scipy.stats import binomtest

killed, tested, seed = map(int, sys.argv[1:])
ci = binomtest(killed, tested).proportion_ci(0.95)
print(f"mutation score (sample of {tested}, seed {seed}): {killed}/{tested} killed ({100 * killed / tested:.1f}%, "
      f"95% CI {100 * ci.low:.0f}-{100 * ci.high:.0f}%); the survivors' diffs are above")
PY
