#!/usr/bin/env bash
# Mutation check of the modules whose numbers the report rests on (not part of CI: about an hour on 2 cores).
# mutmut changes one operator or constant at a time and runs the fast tests on each change; a mutant that
# survives is a bug those tests would not catch. Prints the score (killed / all mutants) at the end.
#
#   pip install -e ".[dev,mutation]" && scripts/mutation.sh              # the modules below
#   scripts/mutation.sh src/normbench/instruments/probes.py                          # or the ones given
#   mutmut show <id>                                                     # a survivor's diff
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PYTHONPATH="$root/src" NORMBENCH_CACHE="${NORMBENCH_CACHE:-/tmp/normbench-mutation-cache}"

modules=("$@")
if [ ${#modules[@]} -eq 0 ]; then
  modules=(src/normbench/norms.py src/normbench/instruments/probes.py src/normbench/run/checkpointing.py src/normbench/report/confidence.py)
fi
paths="$(IFS=,; echo "${modules[*]}")"
# the fast tests that exercise these modules (the slow, end-to-end ones would take days over every mutant)
tests="tests/test_norms.py tests/test_norm_oracles.py tests/test_norm_zoo.py tests/test_sync.py tests/test_instruments.py"
tests+=" tests/test_models.py tests/test_report.py tests/test_validation.py"

mutmut run --paths-to-mutate "$paths" --tests-dir tests \
  --runner "python -m pytest -x -q -p no:cacheprovider -m 'not slow' $tests" || true  # non-zero while any survive
mutmut results || true
mutmut junitxml > mutation.xml
python - <<'PY'
import xml.etree.ElementTree as ET

cases = ET.parse("mutation.xml").getroot().iter("testcase")
outcomes = [("failure" if case.find("failure") is not None else "killed") for case in cases]
killed = outcomes.count("killed")
print(f"mutation score: {killed}/{len(outcomes)} killed ({100 * killed / max(len(outcomes), 1):.1f}%)")
PY
