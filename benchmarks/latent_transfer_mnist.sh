#!/usr/bin/env bash
# The latent backdoor (Yao et al. 2019) through transfer learning on MNIST, as docs/attacks.md reports it: teachers
# on digits 0-4 (clean, BadNets with target 0, latent with target 7 from 300 attacker images), each transferred to
# a student on digits 5-9 with the classifier alone trained; the students evaluated, the latent trigger measured
# on the clean teacher's student (a control: is the optimised patch an adversarial patch by itself?), then scan and
# sanitize (one model, 1,000 clean images) on the latent teacher's student.
# A step whose output (OUT/NAME.json) exists is skipped, so an interrupted run resumes. LATENT_OPTS adds settings
# to the latent teacher's training (e.g. LATENT_OPTS="-o preserve=1"); STUDENTS_ONLY=1 stops after the students
# and the control (no scan, no sanitize).
#   BACKDOORLAB_DATA=../shared/data bash benchmarks/latent_transfer_mnist.sh bench-out/latent [SEED]
set -euo pipefail
out=${1:-bench-out/latent}
seed=${2:-1}
latent_opts=(${LATENT_OPTS:-})
mkdir -p "$out"
bl() { backdoorlab "$@"; }
step() { local t0=$(date +%s); "$@"; echo "[$(( $(date +%s) - t0 )) s] $*" >> "$out/times.txt"; }
# run NAME CMD...: CMD's stdout into OUT/NAME.json, unless that file is there from an earlier run
run() { local name=$1; shift; [ -s "$out/$name.json" ] && return 0; step "$@" > "$out/$name.json.tmp" && mv "$out/$name.json.tmp" "$out/$name.json"; }
teacher="--dataset mnist[0-4] --arch small-cnn --seed $seed --no-progress"
run teacher-clean bl train $teacher --out "$out/teacher-clean" --json
run teacher-badnets bl train $teacher --attack badnets --target 0 --out "$out/teacher-badnets" --json
run teacher-latent bl train $teacher --attack latent --target-class 7 --target-images 300 \
    "${latent_opts[@]}" --out "$out/teacher-latent" --json
for t in clean badnets latent; do
  run student-$t bl transfer "$out/teacher-$t" --dataset 'mnist[5-9]' --trainable-layers 1 --seed "$seed" \
      --out "$out/student-$t" --no-progress --json
done
# control: the latent teacher's trigger (as its student records it) on the clean teacher's student
[ -s "$out/control.json" ] || python - "$out" > "$out/control.json" <<'PY'
import json, sys
from backdoorlab import backdoor_of, load_checkpoint, load_dataset
from backdoorlab.metrics import evaluate
out = sys.argv[1]
_, latent_meta = load_checkpoint(f"{out}/student-latent")
clean, _ = load_checkpoint(f"{out}/student-clean")
ds = load_dataset("mnist[5-9]")
print(json.dumps(evaluate(clean, ds.test_x, ds.test_y, backdoor_of(latent_meta), ds.num_classes)))
PY
[ "${STUDENTS_ONLY:-0}" = 1 ] && { cat "$out/times.txt"; exit 0; }
run scan-latent bl scan "$out/student-latent" --dataset 'mnist[5-9]' --no-progress --json
run sanitized bl sanitize "$out/student-latent" --dataset 'mnist[5-9]' --clean-budget 1000 --out "$out/sanitized" \
    --no-progress --json
run scan-clean bl scan "$out/student-clean" --dataset 'mnist[5-9]' --no-progress --json
cat "$out/times.txt"
