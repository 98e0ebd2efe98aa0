#!/usr/bin/env bash
# Post-purification robustness of every defense on one seed: a BadNets suspect and a clean control of the same
# recipe (trained here unless OUT already holds them), every defense run on the suspect by `backdoorlab repair`
# (the two-model sanitizer with a second suspect of seed SEED+1), then the retuning attack on the suspect and on
# every repaired model beside the control (retune_table.py). Every step resumes where a rerun finds its output.
#
#   bash benchmarks/post_purification.sh DATASET ARCH BUDGET SEED OUT [EPOCHS]
#   e.g. OMP_NUM_THREADS=1 taskset -c 0 bash benchmarks/post_purification.sh mnist small-cnn 1000 2 bench-out/post-mnist/seed-2
#
# DEFENSES (environment): the defenses to run (default: every repairer and mode-connectivity-two, the two-model
# sanitizer);
# the retuning attack runs on every default column whose repaired model is under OUT/defenses/repaired, so a
# model repaired elsewhere can be linked there.
# Tables over seeds: python benchmarks/retune_table.py --table OUT_SEED1/retune/results.json ... --max-drop 2
set -euo pipefail
dataset=$1 arch=$2 budget=$3 seed=$4 out=$5 epochs=${6:-}
here=$(cd "$(dirname "$0")" && pwd)
all="finetune fst fine-pruning anp nc-unlearning pam i-bau noise mode-connectivity finetune-sam mode-connectivity-two"
defenses=${DEFENSES:-$all}
epoch_args=()
[ -n "$epochs" ] && epoch_args=(--epochs "$epochs")
mkdir -p "$out/suspects"
if [ ! -f "$out/suspects/badnets/model.json" ]; then
  backdoorlab train --dataset "$dataset" --arch "$arch" --attack badnets --seed "$seed" "${epoch_args[@]}" \
    --no-progress --out "$out/suspects/badnets" --json
fi
if [ ! -f "$out/control/model.json" ]; then
  backdoorlab train --dataset "$dataset" --arch "$arch" --seed "$seed" "${epoch_args[@]}" --no-progress \
    --out "$out/control" --json
fi
for d in $defenses; do
  where="$out/defenses/repaired/badnets-$d"
  [ -f "$where/model.json" ] && continue
  suspects=("$out/suspects/badnets")
  name=$d
  if [ "$d" = mode-connectivity-two ]; then
    name=mode-connectivity
    if [ ! -f "$out/suspects/badnets-2/model.json" ]; then
      backdoorlab train --dataset "$dataset" --arch "$arch" --attack badnets --seed $((seed + 1)) "${epoch_args[@]}" \
        --no-progress --out "$out/suspects/badnets-2" --json
    fi
    suspects+=("$out/suspects/badnets-2")
  fi
  backdoorlab repair "$name" "${suspects[@]}" --dataset "$dataset" --clean-budget "$budget" --out "$where" \
    --no-progress --json
done
models=("suspect=$out/suspects/badnets")
for d in $all; do
  [ -f "$out/defenses/repaired/badnets-$d/model.json" ] && models+=("$d=$out/defenses/repaired/badnets-$d")
done
python "$here/retune_table.py" --dataset "$dataset" --control "$out/control" --suspect "$out/suspects/badnets" \
  --out "$out/retune" --models "${models[@]}"
