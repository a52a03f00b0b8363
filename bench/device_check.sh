#!/usr/bin/env bash
# The one prepared GPU check (issues 13 and 14's GPU figures, the GPU tests, the SD1.5 bench),
# run ON THE LENT DEVICE MACHINE from the repository root, with .whl/ carried (fill it here
# first with bench/device_check_prepare.sh). bench/README.md's bench_device_check section gives
# the exact call. Needs no network: installs the carried wheels into /tmp/site.
#
# Each stage has its own timeout so one hang cannot eat the call; the stages together stay
# under ~9 minutes (STAGE_SCALE=0.5 halves every limit for a shorter call; STAGES="flux sd15"
# runs only the stages named: sdxl flux flux-bf16 pytest-gpu sd15). Writes under $OUT
# (at most 8 files come back): summary.md (every table, each stage's exit status), env.txt,
# and one log per stage. Exit status: 0 when every stage passed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo="$PWD"
out="${OUT:-/tmp/loom-device-check}"
mkdir -p "$out"
scale="${STAGE_SCALE:-1}"
summary="$out/summary.md"
started=$(date +%s)

site="${SITE:-/tmp/site}"  # where the wheels go (SITE=... to try the script elsewhere)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl >"$out/env.txt" 2>&1 || { cat "$out/env.txt"; exit 2; }
export PYTHONPATH="$site" PYTHONUNBUFFERED=1
export LOOM_TOKENIZERS_PATH="$repo/.whl/tokenizers" LOOM_TEST_TOKENIZERS="$repo/.whl/tokenizers"
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    nproc
    free -g | head -2
    df -h /tmp | tail -1
    python3 -c "import sys, torch, transformers, diffusers, loom; print(sys.version.split()[0], torch.__version__, 'transformers', transformers.__version__, 'diffusers', diffusers.__version__)"
} >>"$out/env.txt" 2>&1

status=0
# stage NAME SECONDS COMMAND...: run with a timeout, log to $out/NAME.log, tables to summary.md
stage() {
    local name=$1 seconds=$2
    shift 2
    if [[ -n "${STAGES:-}" && " $STAGES " != *" $name "* ]]; then return; fi
    seconds=$(python3 -c "print(max(10, int($seconds * $scale)))")
    echo "== $name (limit ${seconds}s, $(($(date +%s) - started))s into the call)"
    local begin=$(date +%s)
    timeout --kill-after=15 "$seconds" "$@" >"$out/$name.log" 2>&1
    local rc=$?
    local took=$(($(date +%s) - begin))
    {
        echo "## $name: exit $rc in ${took}s$([[ $rc -eq 124 || $rc -eq 137 ]] && echo ' (TIMED OUT)')"
        echo
        grep -E '^\|' "$out/$name.log" || tail -n 5 "$out/$name.log"
        echo
    } >>"$summary"
    echo "   exit $rc in ${took}s"
    [[ $rc -eq 0 ]] || status=1
}

bench=(python3 bench/bench_family_cuda.py --size full --device cuda --pixels 1024)
stage sdxl 140 "${bench[@]}" --family sdxl --steps 4 --repeats 10
stage flux 170 "${bench[@]}" --family flux --dtype fp8 --steps 4 --repeats 10
if [[ "${FLUX_BF16:-0}" == 1 ]]; then
    stage flux-bf16 200 "${bench[@]}" --family flux --dtype bf16 --steps 4 --repeats 10
fi
# every test folder holding a GPU test (a gpu mark, or the cuda id of device_params.DEVICES)
mapfile -t gpu_dirs < <(grep -rlE "mark\.gpu|DEVICES|device_params" tests --include='test_*.py' |
    xargs -n1 dirname | sort -u | grep -vE '^tests/(e2e|http|redis|upscale|comfy-compat)')
stage pytest-gpu 100 python3 -m pytest -m gpu -q -rs -p no:cacheprovider "${gpu_dirs[@]}"
stage sd15 100 python3 bench/bench_sd15_cuda.py --repeats 20

echo "total $(($(date +%s) - started))s" | tee -a "$summary"
cat "$summary"
exit $status
