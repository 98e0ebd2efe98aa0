#!/usr/bin/env bash
# The adaptive attack on the mode-connectivity sanitizer (`backdoorlab attack path-backdoor`, docs/attacks.md):
# BadNets suspects of seeds SEED and SEED+1 (trained here unless OUT already holds them), each turned into an adaptive
# suspect by the paper's attack (a curve trained on the attacker's poisoned data, its middle released) and by the
# hardened variant (-o harden_rounds=2: then fine-tuned against two simulated sanitizer runs), each adaptive suspect
# sanitized alone (`backdoorlab sanitize A`, the defaults) and with its seed+1 twin (`backdoorlab sanitize A B`).
# The plain BadNets rows are the same two sanitize commands on the BadNets suspects (PLAIN=1 runs them too).
# Every step resumes where a rerun finds its output; STEPS (environment) names the steps to run, in order.
#
#   bash benchmarks/path_backdoor.sh DATASET ARCH BUDGET SEED OUT [ATTACKER_IMAGES] [CURVE_STEPS] [EPOCHS]
#   e.g. OMP_NUM_THREADS=1 bash benchmarks/path_backdoor.sh mnist small-cnn 1000 1 bench-out/path-backdoor-mnist 5000 1200
#   AUGMENT (default none, as in the documented MNIST runs; the CLI's own default is auto, the sanitizer's augmentation)
#   and TRIGGER pass the augmentation and the trigger options.
#   CIFAR-10 (docs/results.md; STEPS names the steps), e.g. AUGMENT=crop-flip-jpeg bash benchmarks/path_backdoor.sh \
#       cifar10 resnet20 2500 1 bench-out/path-backdoor-cifar10 5000 2400 30
#       (with OUT/suspects/badnets-1 and -2 copied in beforehand)
set -euo pipefail
dataset=$1 arch=$2 budget=$3 seed=$4 out=$5 images=${6:-5000} steps=${7:-2400} epochs=${8:-}
augment=${AUGMENT:-none}
trigger=(${TRIGGER:-})
epoch_args=()
[ -n "$epochs" ] && epoch_args=(--epochs "$epochs")
steps_order=${STEPS:-"suspects paper-1 paper-1-one paper-2 paper-two hard-1 hard-1-one hard-2 hard-two"}
[ "${PLAIN:-0}" = 1 ] && steps_order="$steps_order plain-one plain-two"
mkdir -p "$out/suspects" "$out/sanitized"
s1=$out/suspects/badnets-1 s2=$out/suspects/badnets-2

suspect() {  # suspect SEED DIR: a BadNets suspect of the library's recipe
  [ -f "$2/model.json" ] && return
  backdoorlab train --dataset "$dataset" --arch "$arch" --attack badnets --seed "$1" "${epoch_args[@]}" \
    --no-progress --out "$2" --json
}
adaptive() {  # adaptive KIND SUSPECT OUT [-o ...]: the path backdoor on a suspect
  local kind=$1 from=$2 to=$3; shift 3
  [ -f "$to/model.json" ] && return
  backdoorlab attack path-backdoor "$from" --out "$to" --attacker-images "$images" --steps "$steps" \
    -o augment="$augment" "${trigger[@]}" "$@" --no-progress --json > "$to.json"
}
sanitize() {  # sanitize OUT SUSPECT [SUSPECT]: the sanitizer with its defaults on the data set's budget
  local to=$1; shift
  [ -f "$to/path.json" ] && return
  backdoorlab sanitize "$@" --dataset "$dataset" --clean-budget "$budget" --out "$to" --no-progress --json > "$to.json"
}

for step in $steps_order; do
  case $step in
    suspects) suspect "$seed" "$s1"; suspect $((seed + 1)) "$s2" ;;
    paper-1) adaptive paper "$s1" "$out/suspects/paper-1" ;;
    paper-2) adaptive paper "$s2" "$out/suspects/paper-2" ;;
    hard-1) adaptive hard "$s1" "$out/suspects/hard-1" -o harden_rounds=2 ;;
    hard-2) adaptive hard "$s2" "$out/suspects/hard-2" -o harden_rounds=2 ;;
    paper-1-one) sanitize "$out/sanitized/paper-one" "$out/suspects/paper-1" ;;
    paper-two) sanitize "$out/sanitized/paper-two" "$out/suspects/paper-1" "$out/suspects/paper-2" ;;
    hard-1-one) sanitize "$out/sanitized/hard-one" "$out/suspects/hard-1" ;;
    hard-two) sanitize "$out/sanitized/hard-two" "$out/suspects/hard-1" "$out/suspects/hard-2" ;;
    plain-one) sanitize "$out/sanitized/plain-one" "$s1" ;;
    plain-two) sanitize "$out/sanitized/plain-two" "$s1" "$s2" ;;
    *) echo "unknown step $step" >&2; exit 2 ;;
  esac
  echo "$(date -u +%FT%TZ) done: $step"
done
