#!/usr/bin/env bash
# Every test, from a fresh Debian or Ubuntu machine: installs what is missing (saying what and
# why), runs the engine's suite (cargo test --release, and its parity suites at 16-, 32- and
# 64-lane subgroups and under the Khronos validation layer) and the WebGPU page's (npm --prefix web test), and ends with one line: `N passed, N failed` (`, N skipped` when any were skipped).
# Exit status 0 only when both suites ran and nothing failed. `.ci/run` calls exactly this.
set -uo pipefail
cd "$(dirname "$0")/.."

say() { printf 'test.sh: %s\n' "$*"; }

# ---- what the tests need --------------------------------------------------------------------
missing=() why=()
need() { missing+=("$1"); why+=("$1 ($2)"); }
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need mesa-vulkan-drivers "lavapipe: the Vulkan driver the GPU tests run on without a GPU"
ldconfig -p | grep -q 'libvulkan\.so\.1' || need libvulkan1 "the Vulkan loader"
ldconfig -p | grep -q 'libEGL\.so\.1' || need libegl1 "EGL, for the GL backend's tests"
ls /usr/share/glvnd/egl_vendor.d/*mesa*.json >/dev/null 2>&1 || need libegl-mesa0 "Mesa's EGL, for the GL backend's tests"
ls /usr/lib/*/dri/swrast_dri.so >/dev/null 2>&1 || need libgl1-mesa-dri "llvmpipe, the GL driver the GL tests run on"
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need python3-venv "Python virtual environments, for TensorBoard's event reader"
ls /usr/share/vulkan/explicit_layer.d/VkLayer_khronos_validation.json >/dev/null 2>&1 || need vulkan-validationlayers "the Khronos validation layer, which checks every API call and synchronization of the parity suites"
command -v spirv-val >/dev/null 2>&1 || need spirv-tools "spirv-val, Khronos's validator of the SPIR-V every shader compiles to"
browser=()
command -v chromium >/dev/null 2>&1 || { browser+=(chromium); why+=("chromium (the WebGPU page's tests run in headless Chromium)"); }
if [ $((${#missing[@]} + ${#browser[@]})) -gt 0 ]; then
  say "installing: ${why[*]}"
  sudo_=()
  [ "$(id -u)" -eq 0 ] || sudo_=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_[@]}" apt-get update || { say "apt-get update failed: install ${missing[*]} ${browser[*]} by hand"; exit 2; }
  if [ ${#missing[@]} -gt 0 ]; then
    "${sudo_[@]}" apt-get install -y --no-install-recommends "${missing[@]}" || exit 2
  fi
  if [ ${#browser[@]} -gt 0 ]; then
    "${sudo_[@]}" apt-get install -y "${browser[@]}" || exit 2
  fi
fi
say "installing the page's test driver exactly as locked (web/package-lock.json)"
(cd web && npm ci --no-audit --no-fund) || exit 2
# TensorBoard's own reader checks the trainer's event files (tests/tensorboard.rs), from a
# virtual environment under target/ (Debian's Python takes no pip installs of its own).
tb_venv=target/tensorboard-venv
if ! "$tb_venv/bin/python3" -c 'import tensorboard' >/dev/null 2>&1; then
  say "installing tensorboard 2.21.0 into $tb_venv (its event reader checks the trainer's TensorBoard files)"
  python3 -m venv "$tb_venv" && "$tb_venv/bin/pip" install -q tensorboard==2.21.0 || {
    say "could not install tensorboard: install python3-venv (apt) and rerun"; exit 2; }
fi
export VAE_WGPU_PYTHON="$PWD/$tb_venv/bin/python3"
# diffusers itself loads the AutoencoderKL folders the trainer writes (tests/conv_cli.rs) where
# torch and diffusers import: PyPI's torch for Linux is a 3-5 GB CUDA build, so it is not installed
# here; without it that one test is counted as skipped.
export VAE_WGPU_TORCH_PYTHON="${VAE_WGPU_TORCH_PYTHON:-python3}"
if "$VAE_WGPU_TORCH_PYTHON" -c 'import torch, diffusers, safetensors, PIL' >/dev/null 2>&1; then
  say "diffusers' round trip runs on $VAE_WGPU_TORCH_PYTHON"
else
  say "$VAE_WGPU_TORCH_PYTHON cannot import torch and diffusers: diffusers' round trip will be skipped (pip install torch diffusers safetensors pillow, or set VAE_WGPU_TORCH_PYTHON)"
fi

# Mesa complains on stderr without a runtime dir; give it a private one.
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "${XDG_RUNTIME_DIR}" ]; then
  XDG_RUNTIME_DIR="$(mktemp -d)"
  chmod 700 "$XDG_RUNTIME_DIR"
  export XDG_RUNTIME_DIR
fi
# On Linux the GL backend (llvmpipe through EGL, installed above) must be covered, not skipped.
[ "$(uname -s)" = Linux ] && export VAE_WGPU_REQUIRE_GL=1
# The SPIR-V check (tests/shader_targets.rs) must run, not be skipped: spirv-val is installed above.
export VAE_WGPU_REQUIRE_SPIRV_VAL=1

# ---- the two suites -------------------------------------------------------------------------
logs="$(mktemp -d)"
# A test that cannot run its check here writes why into this file (tests/common: `skip`); those
# count as skipped, not passed.
export VAE_WGPU_SKIP_LOG="$logs/skipped.txt"
: > "$VAE_WGPU_SKIP_LOG"
say "cargo test --release"
cargo test --release 2>&1 | tee "$logs/cargo.log"
cargo_status=${PIPESTATUS[0]}
# The engine alone, as a library user builds it (`default-features = false`: no programs, no
# clap, no plots): its unit tests and the front door's (tests/library.rs), then
# examples/library.rs end to end on the vendored MNIST (one epoch, encode, decode, save), which
# counts as one test.
say "cargo test --release --no-default-features --lib --test library (the engine alone)"
cargo test --release --no-default-features --lib --test library 2>&1 | tee -a "$logs/cargo.log"
[ "${PIPESTATUS[0]}" -ne 0 ] && cargo_status=1
say "cargo run --release --no-default-features --example library (the front door, end to end)"
if cargo run --release --no-default-features --example library -- data/mnist "$logs/library.safetensors" 2>&1 |
  tee "$logs/library.log" && grep -q '^saved ' "$logs/library.log" && [ -s "$logs/library.safetensors" ]; then
  echo "test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured (examples/library.rs)" >> "$logs/cargo.log"
else
  echo "test result: FAILED. 0 passed; 1 failed; 0 ignored; 0 measured (examples/library.rs)" >> "$logs/cargo.log"
  cargo_status=1
fi
# The kernel and whole-step parity suites again at lavapipe's other subgroup widths: 4 lanes
# (narrower than the subgroup kernels' 8: they must be refused), 16, 32 and 64 (the run above has
# its default 8; real GPUs have 8 to 64). A machine whose first adapter is a real GPU ignores the
# variable and runs them once more as they were.
for width in 128 512 1024 2048; do
  say "cargo test --release --test parity_kernels --test model_parity, LP_NATIVE_VECTOR_WIDTH=$width ($((width / 32))-lane subgroups)"
  LP_NATIVE_VECTOR_WIDTH=$width cargo test --release --test parity_kernels --test model_parity 2>&1 | tee -a "$logs/cargo.log"
  [ "${PIPESTATUS[0]}" -ne 0 ] && cargo_status=1
done
# The suites that cover every kernel, every matmul variant and convolution formulation, the
# training step, evaluation, the texture-fed paths and steps per submit, once more under the
# Khronos validation layer with synchronization validation (tests/validation/vk_layer_settings.txt):
# any message it reports fails the test that sees it (tests/common: `assert_no_validation_messages`;
# tests/validation.rs proves the layer is loaded and heard).
validated=(--test parity_kernels --test model_parity --test parity_conv --test torch_parity --test steps_per_submit --test eval_pictures)
say "cargo test --release ${validated[*]}, under the Khronos validation layer (WGPU_VALIDATION=1, synchronization validation)"
WGPU_VALIDATION=1 VK_LAYER_SETTINGS_PATH="$PWD/tests/validation" cargo test --release "${validated[@]}" 2>&1 | tee -a "$logs/cargo.log"
[ "${PIPESTATUS[0]}" -ne 0 ] && cargo_status=1
say "npm --prefix web test"
npm --prefix web test 2>&1 | tee "$logs/npm.log"
npm_status=${PIPESTATUS[0]}

# cargo: one `test result: ok. 5 passed; 0 failed; 1 ignored; …` line per test binary.
read -r c_pass c_fail c_skip < <(grep -E '^test result: ' "$logs/cargo.log" |
  sed -E 's/.* ([0-9]+) passed; ([0-9]+) failed; ([0-9]+) ignored.*/\1 \2 \3/' |
  awk '{p += $1; f += $2; s += $3} END {print p + 0, f + 0, s + 0}')
# node's test runner: `# pass N`, `# fail N`, `# skipped N`.
n_count() { grep -E "^# $1 [0-9]+" "$logs/npm.log" | awk '{s += $3} END {print s + 0}'; }
n_pass=$(n_count pass) n_fail=$(n_count fail) n_skip=$(n_count skipped)
# Tests that passed by recording a skip are skipped, not passed.
r_skip=$(wc -l < "$VAE_WGPU_SKIP_LOG")
if [ "$r_skip" -gt 0 ]; then
  say "skipped (each passed without checking what it is for):"
  sed 's/^/  /' "$VAE_WGPU_SKIP_LOG"
fi
c_pass=$((c_pass - r_skip)) c_skip=$((c_skip + r_skip))
# A suite that died before reporting counts as one failure.
[ "$cargo_status" -ne 0 ] && [ "$c_fail" -eq 0 ] && c_fail=1
[ "$npm_status" -ne 0 ] && [ "$n_fail" -eq 0 ] && n_fail=1
passed=$((c_pass + n_pass)) failed=$((c_fail + n_fail)) skipped=$((c_skip + n_skip))
say "cargo: $c_pass passed, $c_fail failed, $c_skip skipped; browser: $n_pass passed, $n_fail failed, $n_skip skipped"
if [ "$skipped" -gt 0 ]; then
  echo "$passed passed, $failed failed, $skipped skipped"
else
  echo "$passed passed, $failed failed"
fi
[ "$failed" -eq 0 ]
