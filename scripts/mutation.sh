#!/usr/bin/env bash
# Mutation check of the modules whose numbers the report rests on (not part of CI). mutmut changes one operator or
# constant at a time; a mutant the fast tests (`pytest -m "not slow"`) do not fail on is a bug they would not catch.
# It runs in a temporary git worktree of HEAD (commit first), so the working tree is never mutated.
#
#   pip install -e ".[dev,mutation]"
#   scripts/mutation.sh --sample 80        # a random sample of the mutants (seeded): the score with its 95% CI;
#                                          # about a minute a mutant on 2 cores
#   scripts/mutation.sh                    # every mutant (~860 in the modules below: about 15 core-hours)
#   scripts/mutation.sh --sample 20 src/normbench/instruments/probes.py    # other modules
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
sample=0
if [[ ${1:-} == --sample ]]; then sample=$2; shift 2; fi
modules=("$@")
if [[ ${#modules[@]} -eq 0 ]]; then
  modules=(src/normbench/norms.py src/normbench/instruments/probes.py src/normbench/run/checkpointing.py
    src/normbench/report/confidence.py)
fi
paths="$(IFS=,; echo "${modules[*]}")"
work="$(mktemp -d)"
git -C "$root" worktree add --detach --quiet "$work" HEAD
trap 'git -C "$root" worktree remove --force "$work"' EXIT
cd "$work"
export PYTHONPATH="$work/src" NORMBENCH_CACHE="${NORMBENCH_CACHE:-$root/.cache/normbench}"
fast=(python -m pytest -x -q -p no:cacheprovider -m "not slow" tests/)

if [[ $sample -eq 0 ]]; then
  mutmut run --paths-to-mutate "$paths" --tests-dir tests --runner "${fast[*]}" || true  # non-zero while any survive
  mutmut results || true
  exit 0
fi
# number every mutant without testing any (a runner that always passes), then test a seeded sample of them
mutmut run --paths-to-mutate "$paths" --tests-dir tests --runner true > /dev/null 2>&1 || true
ids=$(python - "$sample" <<'PY'
import random, sqlite3, sys

ids = [row[0] for row in sqlite3.connect(".mutmut-cache").execute("select id from Mutant")]
print(" ".join(map(str, sorted(random.Random(20261204).sample(ids, min(int(sys.argv[1]), len(ids)))))))
PY
)
killed=0 tested=0 survivors=()
for id in $ids; do
  mutmut apply "$id" > /dev/null
  if "${fast[@]}" > /dev/null 2>&1; then survivors+=("$id"); else killed=$((killed + 1)); fi
  tested=$((tested + 1))
  git checkout --quiet -- src/
done
for id in "${survivors[@]}"; do mutmut show "$id"; done
python - "$killed" "$tested" <<'PY'
import sys

from scipy.stats import binomtest

killed, tested = map(int, sys.argv[1:])
ci = binomtest(killed, tested).proportion_ci(0.95)
print(f"mutation score (sample): {killed}/{tested} killed ({100 * killed / tested:.1f}%, 95% CI "
      f"{100 * ci.low:.0f}-{100 * ci.high:.0f}%); the survivors' diffs are above")
PY
