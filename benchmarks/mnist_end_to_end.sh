#!/usr/bin/env bash
# End-to-end wall time through the CLI, as a user runs it: train two backdoored MNIST endpoints, sanitize with
# 1,000 clean images, evaluate the result. Target: under 10 minutes on a 2-core CPU.
#   BACKDOORLAB_DATA=../shared/data bash benchmarks/mnist_end_to_end.sh bench-out/e2e
set -euo pipefail
out=${1:-bench-out/e2e}
mkdir -p "$out"
start=$(date +%s)
step() { local t0=$(date +%s); "$@"; echo "  [$(( $(date +%s) - t0 )) s] $*" >> "$out/times.txt"; }
: > "$out/times.txt"
for s in 1 2; do
  step backdoorlab train --dataset mnist --arch small-cnn --attack badnets --target 0 --poison-rate 0.1 \
       --seed $s --out "$out/m$s" --no-progress
done
step backdoorlab sanitize "$out/m1" "$out/m2" --dataset mnist --clean-budget 1000 --out "$out/sanitized" --no-progress
step backdoorlab evaluate "$out/sanitized" --json
echo "total $(( $(date +%s) - start )) s" >> "$out/times.txt"
cat "$out/times.txt"
