#!/usr/bin/env bash
# Everything this project wants to know from a GPU, in under 8 minutes, in one command:
#
#   benchmarks/gpu_check.sh --out gpu-check [--data PATH/cifar10.npz] [--inception-weights PATH] [--dry-run]
#   python -m benchmarks.gpu_check report gpu-check --out BENCHMARKS.md      # the BENCHMARKS.md section
#
# Run it from anywhere; it works from the repository root. Safe on a fresh machine: if vmfprior, accelerate or
# torch_fidelity cannot be imported it installs the repository's experiment dependencies quietly
# (pip install -e .[experiments]); if that fails too it says so and goes on (the steps that need them fail).
# Steps, each with its own time limit inside an overall budget; a failed or timed-out step is logged and the
# next one runs:
#   environment        the GPU, torch, CUDA, package versions
#   gan_speed          the `chainer` preset's iteration time over 30 iterations, Gaussian and vMF noise
#                      (on --data, else on a stand-in file of random pixels: the output says which)
#   vmf_latent_eager   python -m benchmarks.vmf_latent --device cuda --no-compile
#   vmf_latent_compiled  python -m benchmarks.vmf_latent --device cuda --dims 10 --hvae-batches 64 (eager and compiled)
#   ckd_table2_cost    python -m ckd.experiment --preset cifar100-table2 --estimate-cost
#   ckd_table3_cost    python -m ckd.experiment --preset cifar100-table3 --estimate-cost
#   fidelity_speed     IS/FID of 5k generated images through torch-fidelity, only with Inception weights
#                      (--inception-weights PATH or $VMFPRIOR_INCEPTION_WEIGHTS)
# Output in --out DIR: steps.jsonl (one line per step: command, exit status, seconds), <step>.out (its output),
# environment.json, gan_speed.json, fidelity_speed.json, and gpu_check.log (everything in order).
# --dry-run: every step at toy size on the CPU (CUDA hidden), for a test on a machine without a GPU.
set -u

out=""
data=""
weights="${VMFPRIOR_INCEPTION_WEIGHTS:-}"
dry_run=0
budget=450  # seconds for the steps after the install: 7.5 minutes
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="${2:-}"; shift 2 ;;
        --data) data="${2:-}"; shift 2 ;;
        --inception-weights) weights="${2:-}"; shift 2 ;;
        --budget) budget="${2:-}"; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$out" ]; then echo "error: --out DIR is required" >&2; exit 2; fi
if [ -n "$data" ] && [ ! -f "$data" ]; then echo "error: --data $data: no such file" >&2; exit 2; fi
if [ -n "$weights" ] && [ ! -f "$weights" ]; then echo "error: --inception-weights $weights: no such file" >&2; exit 2; fi

cd "$(dirname "$0")/.." || exit 2
mkdir -p "$out" || exit 2
out="$(cd "$out" && pwd)"
log="$out/gpu_check.log"
: > "$out/steps.jsonl"
: > "$log"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py="$(command -v python || command -v python3)"  # the interpreter pip installs for (pyenv, venv or system)
script_command="benchmarks/gpu_check.sh $([ $dry_run = 1 ] && echo --dry-run) --out $out"
if [ $dry_run = 1 ]; then
    export CUDA_VISIBLE_DEVICES=""
    export OMP_NUM_THREADS=1
fi

say() { echo "$*" | tee -a "$log"; }

# record STEP RC SECONDS NOTE COMMAND...: one JSON line in steps.jsonl
record() {
    "$py" - "$out/steps.jsonl" "$dry_run" "$script_command" "$@" <<'PY'
import json, shlex, sys
path, dry, script, step, rc, seconds, note, *command = sys.argv[1:]
with open(path, "a") as f:
    f.write(json.dumps({"step": step, "rc": int(rc), "seconds": float(seconds), "note": note or None,
                        "command": shlex.join(command), "dry_run": dry == "1", "script_command": script}) + "\n")
PY
}

start_time=$(date +%s)
# step NAME LIMIT NOTE COMMAND...: run COMMAND under `timeout`, capped by what is left of the budget
step() {
    local name="$1" limit="$2" note="$3"; shift 3
    local left=$(( budget - ($(date +%s) - start_time) ))
    if [ "$left" -lt 10 ]; then
        say "--- $name: skipped, the ${budget} s budget is spent"
        record "$name" -1 0 "skipped: budget spent" "$@"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    say "--- $name (limit ${limit} s): $*"
    local began=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "$@" > "$out/$name.out" 2>&1
    local rc=$?
    local seconds=$("$py" -c "import sys; print(round($(date +%s.%N) - $began, 2))")
    cat "$out/$name.out" >> "$log"
    case $rc in
        0) say "--- $name: ok in ${seconds} s" ;;
        124|137) say "--- $name: timed out after ${limit} s (continuing)" ;;
        *) say "--- $name: failed with exit status $rc (continuing; see $out/$name.out)" ;;
    esac
    record "$name" "$rc" "$seconds" "$note" "$@"
}

# 0. packages
if ! "$py" -c "import vmfprior, accelerate, torch_fidelity" >/dev/null 2>&1; then
    say "--- install: vmfprior, accelerate or torch_fidelity missing; pip install -q -e .[experiments]"
    began=$(date +%s)
    if timeout 300 "$py" -m pip install -q -e ".[experiments]" >> "$log" 2>&1; then
        say "--- install: ok"; rc=0
    else
        rc=$?; say "--- install: failed (exit $rc; no package index reachable?); continuing, steps may fail"
    fi
    record install "$rc" "$(( $(date +%s) - began ))" "" "$py" -m pip install -q -e ".[experiments]"
    start_time=$(date +%s)  # the budget covers the measurements, not the install
fi

# 1. environment
step environment 60 "" "$py" -m benchmarks.gpu_check environment "$out/environment.json"

# 2. the chainer preset's iteration time (30 iterations; the tiny preset in a dry run)
gan_data="$data"
data_note=""
if [ -z "$gan_data" ]; then
    gan_data="$out/random-cifar10.npz"
    train_images=10000; [ $dry_run = 1 ] && train_images=200
    "$py" -m benchmarks.gpu_check synthetic-data "$gan_data" --train "$train_images" --test 100 >> "$log" 2>&1
    data_note="no CIFAR file given (--data): the GAN ran on random pixels of CIFAR's shape (the time per iteration does not depend on them)"
    say "--- note: $data_note"
fi
if [ $dry_run = 1 ]; then
    step gan_speed 120 "$data_note" "$py" -m benchmarks.gan_speed --preset tiny --sampler gaussian vmf \
        --iterations 2 --warmup 1 --repeats 1 --threads 1 --data "$gan_data" --json "$out/gan_speed.json"
else
    step gan_speed 180 "$data_note" "$py" -m benchmarks.gan_speed --preset chainer --sampler gaussian vmf \
        --iterations 30 --warmup 3 --repeats 1 --data "$gan_data" --json "$out/gan_speed.json"
fi

# 3. the vMF latent step on CUDA, eager and compiled
if [ $dry_run = 1 ]; then
    latent=("$py" -m benchmarks.vmf_latent --device cpu --batches 64 --dims 5 --hvae-batches --repeats 1
            --block-seconds 0.001)
    compiled_grid=()
else
    latent=("$py" -m benchmarks.vmf_latent --device cuda --repeats 7)
    compiled_grid=(--dims 10 --hvae-batches 64)  # each (batch, d) compiles once: 4 compilations, not 11
fi
# The eager columns over the whole grid (--no-compile), then the compiled column beside eager on a smaller grid.
step vmf_latent_eager 120 "" "${latent[@]}" --no-compile
step vmf_latent_compiled 200 "" "${latent[@]}" "${compiled_grid[@]}"

# 4. ckd's cost estimates for the CIFAR-100 tables (the MNIST preset at toy size in a dry run)
if [ $dry_run = 1 ]; then
    step ckd_table2_cost 90 "dry run: the mnist-table3 preset stands in" "$py" -m ckd.experiment \
        --preset mnist-table3 --estimate-cost --cpu --threads 1
    step ckd_table3_cost 90 "dry run: the mnist-table3 preset stands in" "$py" -m ckd.experiment \
        --preset mnist-table3 --estimate-cost --cpu --threads 1
else
    step ckd_table2_cost 90 "" "$py" -m ckd.experiment --preset cifar100-table2 --estimate-cost
    step ckd_table3_cost 90 "" "$py" -m ckd.experiment --preset cifar100-table3 --estimate-cost
fi

# 5. IS/FID throughput on 5k samples (Inception weights needed; a toy extractor in a dry run)
reference=()
[ -n "$data" ] && reference=(--reference "$data")
if [ $dry_run = 1 ]; then
    step fidelity_speed 120 "dry run: a random-weight classifier stands in for Inception" \
        "$py" -m benchmarks.gpu_check fidelity-speed "$out/fidelity_speed.json" --toy --num-samples 40 \
        --batch-size 20 "${reference[@]}"
elif [ -n "$weights" ]; then
    step fidelity_speed 150 "" "$py" -m benchmarks.gpu_check fidelity-speed "$out/fidelity_speed.json" \
        --inception-weights "$weights" --num-samples 5000 "${reference[@]}"
else
    say "--- fidelity_speed: no Inception weights (--inception-weights or \$VMFPRIOR_INCEPTION_WEIGHTS); skipped"
    record fidelity_speed -1 0 "no Inception weights given: skipped" "$py" -m benchmarks.gpu_check fidelity-speed
fi

say "--- done in $(( $(date +%s) - start_time )) s; results in $out"
say "--- BENCHMARKS.md section: python -m benchmarks.gpu_check report $out --out BENCHMARKS.md"
exit 0
