#!/usr/bin/env bash
# The report of one or more sweeps: results.csv, summary.csv, summary.md and figures in <first dir>/report.
#   scripts/report.sh                              # the newest multirun/<date>/<time> dir
#   scripts/report.sh multirun/2026-01-01/12-00-00 outputs/... [--out DIR] [--metric val/acc] [--wandb]
set -euo pipefail
src="$(cd "$(dirname "$0")/.." && pwd)/src"
if [[ $# -eq 0 ]]; then
  newest=$(ls -d multirun/*/*/ 2>/dev/null | sort | tail -n 1 || true)
  [[ -n "$newest" ]] || { echo "error: no multirun/<date>/<time> dir here; pass the dirs to report" >&2; exit 2; }
  set -- "${newest%/}"
fi
PYTHONPATH="$src${PYTHONPATH:+:$PYTHONPATH}" exec python -m normbench.report "$@"
