#!/usr/bin/env bash
# The README's "Your own model" flow end to end, as the acceptance benchmark runs it:
#   1. an image folder written from a built-in data set (the defender's), and the attacker's copy of its training
#      images without the held-out pool that backdoorlab draws clean budgets from;
#   2. examples/train_backdoored_model.py (plain PyTorch, no backdoorlab) trains a backdoored Net on the attacker's
#      copy, the smiley trigger pasted at the bottom-right corner of 10% of the images, target 0;
#   3. backdoorlab import, evaluate (with the trigger image), scan, sanitize (one model, BUDGET clean images) and
#      evaluate of the sanitized model, every result as JSON under OUT.
#
# Usage: benchmarks/own_model_flow.sh DATASET OUT [EPOCHS] [BUDGET] [-- extra backdoorlab flags, e.g. --device cuda]
# Environment: BACKDOORLAB_DATA (the built-in data sets), PYTHON (default python), FOLDERS (where the image folders
# are written or found; default OUT).
set -euo pipefail
DATASET=$1 OUT=$2 EPOCHS=${3:-15} BUDGET=${4:-2500}
shift $(( $# < 4 ? $# : 4 ))
[ "${1:-}" = "--" ] && shift
EXTRA=("$@")
PY=${PYTHON:-python}
FOLDERS=${FOLDERS:-$OUT}
DEFENDER=$FOLDERS/$DATASET-folder ATTACKER=$FOLDERS/$DATASET-attacker
ARCH=examples/train_backdoored_model.py:Net
TRIGGER=(--attack badnets --target 0 --trigger-image examples/trigger_smiley.png)
mkdir -p "$OUT"

if [ ! -d "$DEFENDER/train" ]; then
  $PY benchmarks/write_image_folder.py "$DATASET" "$DEFENDER" --attacker-copy "$ATTACKER"
fi
if [ ! -f "$OUT/weights.pt" ]; then
  $PY examples/train_backdoored_model.py --data "$ATTACKER" --out "$OUT/weights.pt" --epochs "$EPOCHS" \
    | tee "$OUT/train.log"
fi
IMPORT_LINE=$(grep "backdoorlab import" "$OUT/train.log")
ARCH_ARGS=$(sed -n "s/.*--arch-args '\([^']*\)'.*/\1/p" <<<"$IMPORT_LINE")
MEAN=$(sed -n 's/.*--mean \([^ ]*\).*/\1/p' <<<"$IMPORT_LINE")
STD=$(sed -n 's/.*--std \([^ ]*\).*/\1/p' <<<"$IMPORT_LINE")

run() { local name=$1; shift; /usr/bin/time -f "$name %e s" "$@" --json > "$OUT/$name.json"; }
rm -rf "$OUT/suspect" "$OUT/sanitized"
run import backdoorlab import "$OUT/weights.pt" --arch "$ARCH" --arch-args "$ARCH_ARGS" \
  --dataset "folder:$DEFENDER" --mean "$MEAN" --std "$STD" --out "$OUT/suspect" "${EXTRA[@]}"
run suspect-evaluate backdoorlab evaluate "$OUT/suspect" --arch "$ARCH" "${TRIGGER[@]}" "${EXTRA[@]}"
run scan backdoorlab scan "$OUT/suspect" --arch "$ARCH" --dataset "folder:$DEFENDER" --clean-budget "$BUDGET" \
  --no-progress "${EXTRA[@]}"
run sanitize backdoorlab sanitize "$OUT/suspect" --arch "$ARCH" --dataset "folder:$DEFENDER" \
  --clean-budget "$BUDGET" --out "$OUT/sanitized" --no-progress "${EXTRA[@]}"
run sanitized-evaluate backdoorlab evaluate "$OUT/sanitized" --arch "$ARCH" "${TRIGGER[@]}" "${EXTRA[@]}"

$PY - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
read = lambda name: json.loads((out / f"{name}.json").read_text())
imported, before, scan, after = read("import"), read("suspect-evaluate"), read("scan"), read("sanitized-evaluate")
print(f"import: CA {imported['clean_accuracy']:.2%}")
print(f"suspect: CA {before['clean_accuracy']:.2%}, ASR {before['attack_success_rate']:.2%}")
print(f"scan: backdoored {scan['backdoored']}, suspected target {scan['suspected_target']}, "
      f"anomaly index {scan['anomaly_index']}")
drop = 100 * (before["clean_accuracy"] - after["clean_accuracy"])
print(f"sanitized: CA {after['clean_accuracy']:.2%} (drop {drop:.2f} points), ASR {after['attack_success_rate']:.2%}")
EOF
