#!/usr/bin/env bash
# One command for a speed report of this machine's GPU: builds the engine, then measures the
# adapter (matmul kernels per variant at the model's shapes and 1024^3 beside a CPU sgemm, the
# autotune's choices, the training step, whole epochs, an evaluation) and writes report/report.md
# (a table to paste into an issue) and report/report.json. Needs only the repository and a driver.
#
#   scripts/gpu_report.sh                 # 5 epochs: a few minutes on a real GPU
#   scripts/gpu_report.sh --quick         # 1 epoch and a 10-sample bound: for CPU drivers (lavapipe)
#   scripts/gpu_report.sh --adapter 1     # any gpu_report flag (--backend, --out, --epochs, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
args=()
for a in "$@"; do
  if [ "$a" = "--quick" ]; then args+=(--epochs 1 --iw-samples 10 --kernel-seconds 0.15); else args+=("$a"); fi
done
if [ -z "${XDG_RUNTIME_DIR:-}" ]; then
  XDG_RUNTIME_DIR="$(mktemp -d)"; chmod 700 "$XDG_RUNTIME_DIR"; export XDG_RUNTIME_DIR
fi
cargo build --release --bin vae-wgpu --example gpu_report --example list_adapters
# Where cargo put them: CARGO_TARGET_DIR, a config's build.target-dir, or ./target.
target="$(cargo metadata --format-version 1 --no-deps | grep -o '"target_directory":"[^"]*"' | cut -d'"' -f4)"
"$target/release/examples/list_adapters" || true
exec "$target/release/examples/gpu_report" "${args[@]}"
