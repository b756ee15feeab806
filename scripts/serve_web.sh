#!/usr/bin/env bash
# Serve the WebGPU page on http://127.0.0.1:8080/ (or --port N): exports the training plan into
# web/plan first when there is none (cargo builds the exporter), then runs web/serve.mjs, a tiny
# static server with no dependencies. Open the address in Chrome or Edge and press Start.
#
#   scripts/serve_web.sh                  # plan of the notebook's model
#   scripts/serve_web.sh --port 9000
#   EXPORT_FLAGS="--hidden 400 --epochs 10" scripts/serve_web.sh   # export anew with other flags
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f web/plan/plan.json ] || [ -n "${EXPORT_FLAGS:-}" ]; then
  # shellcheck disable=SC2086
  cargo run --release --example export_web -- --out web/plan ${EXPORT_FLAGS:-}
fi
exec node web/serve.mjs "$@"
