#!/usr/bin/env bash
# The latent backdoor (Yao et al. 2019) through transfer learning on MNIST, as docs/attacks.md reports it: teachers
# on digits 0-4 (clean, BadNets with target 0, latent with target 7 from 300 attacker images), each transferred to
# a student on digits 5-9 with the classifier alone trained; the students evaluated, the latent trigger measured
# on the clean teacher's student (a control: is the optimised patch an adversarial patch by itself?), then scan and
# sanitize (one model, 1,000 clean images) on the latent teacher's student.
#   BACKDOORLAB_DATA=../shared/data bash benchmarks/latent_transfer_mnist.sh bench-out/latent [SEED]
set -euo pipefail
out=${1:-bench-out/latent}
seed=${2:-1}
mkdir -p "$out"
bl() { backdoorlab "$@"; }
step() { local t0=$(date +%s); "$@"; echo "[$(( $(date +%s) - t0 )) s] $*" >> "$out/times.txt"; }
: > "$out/times.txt"
teacher="--dataset mnist[0-4] --arch small-cnn --seed $seed --no-progress"
step bl train $teacher --out "$out/teacher-clean" --json > "$out/teacher-clean.json"
step bl train $teacher --attack badnets --target 0 --out "$out/teacher-badnets" --json > "$out/teacher-badnets.json"
step bl train $teacher --attack latent --target-class 7 --target-images 300 --out "$out/teacher-latent" --json \
    > "$out/teacher-latent.json"
for t in clean badnets latent; do
  step bl transfer "$out/teacher-$t" --dataset 'mnist[5-9]' --trainable-layers 1 --seed "$seed" \
      --out "$out/student-$t" --no-progress --json > "$out/student-$t.json"
done
# control: the latent teacher's trigger (as its student records it) on the clean teacher's student
python - "$out" > "$out/control.json" <<'PY'
import json, sys
from backdoorlab import backdoor_of, load_checkpoint, load_dataset
from backdoorlab.metrics import evaluate
out = sys.argv[1]
_, latent_meta = load_checkpoint(f"{out}/student-latent")
clean, _ = load_checkpoint(f"{out}/student-clean")
ds = load_dataset("mnist[5-9]")
print(json.dumps(evaluate(clean, ds.test_x, ds.test_y, backdoor_of(latent_meta), ds.num_classes)))
PY
step bl scan "$out/student-latent" --dataset 'mnist[5-9]' --no-progress --json > "$out/scan-latent.json"
step bl scan "$out/student-clean" --dataset 'mnist[5-9]' --no-progress --json > "$out/scan-clean.json"
step bl sanitize "$out/student-latent" --dataset 'mnist[5-9]' --clean-budget 1000 --out "$out/sanitized" \
    --no-progress --json > "$out/sanitized.json"
cat "$out/times.txt"
