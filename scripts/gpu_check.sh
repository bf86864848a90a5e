#!/usr/bin/env bash
# The GPU check of issue 18, one command on one GPU (about 5-8 minutes), one folder, one file OUT/gpu_check.md:
#   1. scripts/bench.py --sections norms,recurrent,mfu: the norm cost with GB/s against the memory bandwidth at
#      [32,1024,1024] bf16, the recurrent cells against cuDNN's nn.LSTM/nn.GRU, the MFU of a GPT-small causal LM
#      in bf16 with torch.compile                                                      -> OUT/bench/
#   2. one catalogue entry at scale=gpu cut by trainer.max_steps (length_extrapolation_lm: per-step batch norm
#      against layer norm in a character LSTM LM, tested at 32/128/512 characters)     -> OUT/entry/
#   3. its report (python -m normbench.report)                                         -> OUT/report/
#
#   scripts/gpu_check.sh [--dry] [--mr FILE] [OUT] [train.py overrides of the entry...]   # OUT: outputs/gpu_check
#   ENTRY_NORMS=batch_step,batch_masked,layer ENTRY_STEPS=250 scripts/gpu_check.sh        # the entry's cut
#
# --dry (or GPU_CHECK_DRY=1): the same steps on the CPU at tiny sizes in about half a minute, every column of
# every table produced (tests/test_bench.py runs it); its figures mean nothing.
# It installs nothing: run it where `pip install -e .` was run. Data without any network: the entry reads
# shakespeare_char and the bench MR from $NORMBENCH_CACHE, by default the repository's .cache/normbench when that
# exists, filled on a machine with pip access by `python -m normbench.bench.gpu_check prepare` (6.4 MB, sha256 as
# the data modules pin them; git-ignored, so copy it along). --mr FILE and data.path=DIR use files instead.
# The exit code is the first failing step's; later steps run anyway.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dry=${GPU_CHECK_DRY:-0}
mr=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --dry) dry=1; shift ;;
    --mr) mr=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set /p' "$0" | sed '$d'; exit 0 ;;
    *) break ;;
  esac
done
out=outputs/gpu_check
if [[ $# -gt 0 && $1 != *=* ]]; then out=$1; shift; fi
[[ -n ${NORMBENCH_CACHE:-} || ! -d $root/.cache/normbench ]] || export NORMBENCH_CACHE=$root/.cache/normbench
mkdir -p "$out" && out="$(cd "$out" && pwd)"
rm -rf "$out/bench" "$out/entry" "$out/report"
start=$SECONDS
status=0

bench=(python "$root/scripts/bench.py" --sections norms,recurrent,mfu --out "$out/bench" --large-dtype bfloat16)
entry=(python "$root/train.py" -m experiment=length_extrapolation_lm scale=gpu seed=0 optim.lr=3e-3)
if [[ $dry == 1 ]]; then
  bench+=(--device cpu --quick --smoke --rounds 2 --norms none,layer,batch_masked --large 4,32,64)
  bench+=(--set data.batch_size=8 data.max_len=16 data.vocab_size=300)
  entry+=("norm=${ENTRY_NORMS:-batch_step,layer}" "trainer.max_steps=${ENTRY_STEPS:-3}" trainer.accelerator=cpu)
  entry+=(model.embed_dim=16 model.hidden_size=32 model.num_layers=1 data.train_windows=64 data.eval_tokens=1024)
  entry+=(data.num_workers=0 threads=1)
else
  bench+=(--device cuda --large 32,1024,1024)
  entry+=("norm=${ENTRY_NORMS:-batch_step,batch_masked,layer}" "trainer.max_steps=${ENTRY_STEPS:-250}")
  needs_cache=1
  [[ -z $mr ]] || needs_cache=0
  for arg in "$@"; do [[ $arg != data.path=* ]] || needs_cache=0; done
  if [[ $needs_cache == 1 ]]; then  # fail at once, not after pip's retries on a machine without network
    python -m normbench.bench.gpu_check check "${NORMBENCH_CACHE:-$HOME/.cache/normbench}" || exit 2
  fi
fi
[[ -z $mr ]] || bench+=(--data-path "$mr")
entry+=("$@" "hydra.sweep.dir=$out/entry")

echo "gpu_check: bench: ${bench[*]}"
"${bench[@]}" 2>&1 | tee "$out/bench.log"
step=${PIPESTATUS[0]}
[[ $step == 0 || $status != 0 ]] || status=$step

echo "gpu_check: entry: ${entry[*]}"
entry_start=$SECONDS
"${entry[@]}" > "$out/entry.log" 2>&1
step=$?
entry_seconds=$((SECONDS - entry_start))
tail -n 3 "$out/entry.log"
[[ $step == 0 || $status != 0 ]] || status=$step

python -m normbench.report "$out/entry" --out "$out/report" > "$out/report.log" 2>&1
step=$?
[[ $step == 0 || $status != 0 ]] || status=$step

python -m normbench.bench.gpu_check summary "$out" --entry-seconds "$entry_seconds" \
  --entry-command "python train.py ${entry[*]:2}" > /dev/null
step=$?
[[ $step == 0 || $status != 0 ]] || status=$step
echo "gpu_check: $((SECONDS - start)) s (exit $status): $out/gpu_check.md"
exit $status
