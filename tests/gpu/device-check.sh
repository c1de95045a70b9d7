#!/usr/bin/env bash
# tests/gpu/device-check.sh: the CUDA backend's check on a GPU machine, from a build made
# elsewhere. Two steps:
#
#   tests/gpu/device-check.sh prepare [BUILD_DIR [--emulated]]   (here, built with nvcc)
#       builds the CUDA tests and bench-cuda in BUILD_DIR (default build-cuda) and fills
#       BUILD_DIR/gpu-check/ with what the GPU machine lacks: the binaries, the shared
#       libraries they need that are not the C/C++ runtime or CUDA's (OpenBLAS and its
#       Fortran runtime, zlib: xz-compressed), Fashion-MNIST (IDX .gz) and the PyTorch
#       peer script (../shared/peers/torch_mlp.py, or $ESPALIER_PEERS/torch_mlp.py).
#       --emulated puts the programs built on the CUDA emulation (tests/cuda/emu) there
#       instead, to try the whole check on a machine without a GPU.
#
#   tests/gpu/device-check.sh run [GPU_CHECK_DIR] [--memcheck] [--no-peer]
#       (on the GPU machine, from the repository root; default build-cuda/gpu-check)
#       unpacks the libraries, finds CUDA's (the toolkit's, or PyTorch's nvidia wheels),
#       runs the CUDA test programs (the engine's three, and the core trainer's
#       test-trainer-cuda with GLib), then bench-cuda (the reference MLP for 3 epochs of
#       Fashion-MNIST at batch 128, and again by input path: resident + CUDA Graph, eager,
#       streaming; the wide 4096 layer, the ceilings) and the PyTorch
#       peer on the same GPU, and prints a summary last. Logs go to $OUT (the device
#       tool's folder) or /tmp/espalier-gpu-check. --memcheck also runs the op tests
#       under compute-sanitizer (slow; where the machine's runtime allows it).
#       Exit status: 0 when every test passed.
#
# With the device tool: prepare here, then run with carry ["build-cuda/gpu-check"] and
# command "bash tests/gpu/device-check.sh run build-cuda/gpu-check" (under 5 minutes).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

prepare() {
  local build="${1:-build-cuda}" sfx="" dest bins lib name path peers
  cd "$here"
  # --emulated: the same programs on the CUDA emulation of tests/cuda/emu, to try this
  # script where there is no GPU
  [ "${2:-}" = "--emulated" ] && sfx="-emu"
  [ -f "$build/build.ninja" ] || { echo "no meson build in $build (meson setup $build)" >&2; exit 1; }
  # the core trainer's test opens the backend as a module: the real one, or the emulation's
  module="src/engine/cuda/libespalier-cuda.so"
  [ -n "$sfx" ] && module="tests/cuda/libespalier-cuda-emu.so"
  ninja -C "$build" "tests/cuda/test-cuda-ops$sfx" "tests/cuda/test-cuda-train$sfx" "bench/bench-cuda$sfx" \
    "tests/cuda/test-cuda-graph$sfx" "tests/cuda/test-cuda-memplan$sfx" \
    "tests/cuda/test-trainer-cuda$sfx" "tests/cuda/test-trainer-cuda-graph$sfx" \
    "tests/cuda/test-batchnorm-sync-cuda$sfx" "$module"
  dest="$build/gpu-check"
  rm -rf "$dest"
  mkdir -p "$dest/bin" "$dest/lib" "$dest/data" "$dest/peers"
  bins=("$build/tests/cuda/test-cuda-ops$sfx" "$build/tests/cuda/test-cuda-train$sfx" "$build/bench/bench-cuda$sfx")
  # resident data, deferred statistics, CUDA Graphs, uploads ahead
  bins+=("$build/tests/cuda/test-cuda-graph$sfx")
  # the memory plan bounds a run (es_mem_plan)
  bins+=("$build/tests/cuda/test-cuda-memplan$sfx")
  # the core trainer on the device (GTest: it brings GLib, json-glib and the rest of
  # core's libraries, which the ldd loop below carries)
  bins+=("$build/tests/cuda/test-trainer-cuda$sfx")
  # the same trainer fed from resident data with CUDA Graphs, against eager steps
  bins+=("$build/tests/cuda/test-trainer-cuda-graph$sfx")
  # synchronized BatchNorm's split ops on the device (GTest)
  bins+=("$build/tests/cuda/test-batchnorm-sync-cuda$sfx")
  for b in "${bins[@]}"; do
    cp "$b" "$dest/bin/$(basename "$b" "$sfx")"
  done
  # the libraries a bare CUDA machine may lack: all but the C and C++ runtimes and CUDA's
  cp "$build/$module" "$dest/bin/libespalier-cuda.so"
  for b in "${bins[@]}" "$build/$module"; do
    ldd "$b" | awk '/=> \// { print $1, $3 }'
  done | sort -u | while read -r name path; do
    case "$name" in
      libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libstdc++.so*|libgcc_s.so*) continue ;;
      libcuda.so*|libcudart.so*|libcublas.so*|libcublasLt.so*|libnvidia-*) continue ;;
    esac
    echo "carrying $name ($path)"
    python3 -c 'import lzma, sys; lzma.open(sys.argv[2], "wb", preset=6).write(open(sys.argv[1], "rb").read())' \
      "$path" "$dest/lib/$name.xz"
  done
  # the programs xz-compressed too: each holds the CUDA module's code (about 2.5 MB), and
  # a carry is limited to 64 MiB in all
  for f in "$dest"/bin/*; do
    python3 -c 'import lzma, sys; lzma.open(sys.argv[1] + ".xz", "wb", preset=6).write(open(sys.argv[1], "rb").read())' "$f"
    rm "$f"
  done
  cp "${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}"/*-ubyte.gz "$dest/data/"
  peers="${ESPALIER_PEERS:-$here/../shared/peers}"
  if [ -f "$peers/torch_mlp.py" ]; then
    cp "$peers/torch_mlp.py" "$dest/peers/"
  else
    echo "warning: $peers/torch_mlp.py not found: the run will have no PyTorch peer" >&2
  fi
  du -sh "$dest"
  echo "ready: carry [\"$dest\"], command \"bash tests/gpu/device-check.sh run $dest\""
}

# Directories holding libcublas.so.13 on this machine: the CUDA toolkit's, or the nvidia
# wheels PyTorch brings.
cuda_lib_dirs() {
  local d
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-*/lib64; do
    [ -e "$d/libcublas.so.13" ] && echo "$d"
  done
  python3 - <<'PY' 2>/dev/null || true
import glob, os, site, sys
roots = set(site.getsitepackages() + [p for p in sys.path if p.endswith("-packages")])
for r in sorted(roots):
    for f in glob.glob(os.path.join(r, "nvidia", "**", "libcublas.so.13"), recursive=True):
        print(os.path.dirname(f))
PY
}

run() {
  local dir="${1:-build-cuda/gpu-check}" memcheck=0 peer=1 out lib bin rc=0 a
  shift || true
  for a in "$@"; do
    case "$a" in
      --memcheck) memcheck=1 ;;
      --no-peer) peer=0 ;;
      *) echo "unknown option $a" >&2; exit 2 ;;
    esac
  done
  cd "$here"
  dir="$(cd "$dir" && pwd)"
  out="${OUT:-/tmp/espalier-gpu-check}"
  mkdir -p "$out"
  lib="$(mktemp -d /tmp/espalier-gpu-lib.XXXXXX)"
  # the programs, unpacked beside the libraries (prepare compressed them; the carried
  # folder may be read-only)
  bin="$(mktemp -d /tmp/espalier-gpu-bin.XXXXXX)"
  for f in "$dir"/bin/*; do
    case "$f" in
      *.xz) python3 -c 'import lzma, sys; open(sys.argv[2], "wb").write(lzma.open(sys.argv[1]).read())' \
              "$f" "$bin/$(basename "$f" .xz)" ;;
      *) cp "$f" "$bin/" ;;
    esac
  done
  chmod +x "$bin"/*
  for f in "$dir"/lib/*.xz; do
    [ -e "$f" ] || continue
    python3 -c 'import lzma, sys; open(sys.argv[2], "wb").write(lzma.open(sys.argv[1]).read())' \
      "$f" "$lib/$(basename "$f" .xz)"
  done
  LD_LIBRARY_PATH="$lib:$(cuda_lib_dirs | sort -u | paste -sd: -)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export LD_LIBRARY_PATH
  export ESPALIER_CUDA_MODULE="$bin/libespalier-cuda.so"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  if ldd "$bin"/* | grep "not found"; then
    echo "device-check: libraries missing (above)" >&2
    exit 1
  fi
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,temperature.gpu --format=csv || true

  local t tests_summary=""
  for t in test-cuda-ops test-cuda-train test-cuda-graph test-cuda-memplan test-trainer-cuda test-trainer-cuda-graph \
           test-batchnorm-sync-cuda; do
    local trc=0 targs=()
    [ -e "$bin/$t" ] || continue
    case "$t" in test-trainer-cuda*|test-batchnorm-sync-cuda) targs=(--tap) ;; esac   # GTest
    timeout 240 "$bin/$t" "${targs[@]}" >"$out/$t.tap" 2>&1 || trc=$?
    local pass fail
    pass=$(grep -c '^ok' "$out/$t.tap" || true)
    fail=$(grep -c '^not ok' "$out/$t.tap" || true)
    echo "== $t: exit $trc, $pass ok, $fail not ok"
    grep -A2 '^not ok' "$out/$t.tap" | head -60 || true
    grep '^# ' "$out/$t.tap" | head -30 || true
    [ "$trc" -eq 0 ] || rc=1
    tests_summary+="$t: exit $trc, $pass ok, $fail not ok"$'\n'
  done
  if [ "$memcheck" -eq 1 ]; then
    local cs
    cs="$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)"
    if [ -n "$cs" ]; then
      local mrc=0
      timeout 240 "$cs" --tool memcheck --error-exitcode 9 "$bin/test-cuda-ops" \
        >"$out/memcheck.log" 2>&1 || mrc=$?
      echo "== compute-sanitizer memcheck test-cuda-ops: exit $mrc"
      grep -E "ERROR SUMMARY|Invalid|out of bounds" "$out/memcheck.log" | head -20 || true
      [ "$mrc" -eq 0 ] || rc=1
      tests_summary+="memcheck test-cuda-ops: exit $mrc"$'\n'
    else
      echo "== compute-sanitizer not found: memcheck skipped"
    fi
  fi

  echo "== bench-cuda"
  # shellcheck disable=SC2086  # ESPALIER_BENCH_ARGS: extra words, e.g. "--rows 2048 --no-wide"
  timeout 200 "$bin/bench-cuda" --data "$dir/data" --epochs 3 --batch 128 ${ESPALIER_BENCH_ARGS:-} \
    >"$out/bench-cuda.json" 2>"$out/bench-cuda.err" || echo "bench-cuda failed: $(cat "$out/bench-cuda.err")"
  cat "$out/bench-cuda.json"
  : >"$out/torch.json"
  if [ "$peer" -eq 1 ] && [ -f "$dir/peers/torch_mlp.py" ]; then
    echo "== PyTorch peer"
    sed "s#^DATA = .*#DATA = \"$dir/data\"#" "$dir/peers/torch_mlp.py" >"$out/torch_mlp.py"
    PYTHONUNBUFFERED=1 timeout 200 python3 "$out/torch_mlp.py" --device cuda --batch 128 --epochs 3 \
      >"$out/torch.json" 2>"$out/torch.err" || echo "peer failed: $(tail -5 "$out/torch.err")"
    cat "$out/torch.json"
  fi

  echo
  echo "==== summary"
  printf '%s' "$tests_summary"
  python3 - "$out/bench-cuda.json" "$out/torch.json" <<'PY' || true
import json, sys
ours = {}
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        r = json.loads(line)
        ours[r["bench"]] = r
peer = None
for line in open(sys.argv[2]):
    if line.strip().startswith("{"):
        peer = json.loads(line)
d = ours.get("device")
if d:
    print(f"device: {d['name']} (cc {d['cc']}, {d['sms']} SMs, {d['mem_gib']} GiB, driver {d['driver']})")
m = ours.get("mlp")
if m:
    print(f"espalier MLP epoch, batch {m['batch']}: best {m['best_epoch_s']:.3f} s of {m['epoch_s']}, "
          f"test accuracy {m['test_accuracy']:.4f}")
if peer:
    best = min(peer["epoch_s"])
    print(f"pytorch eager ({peer['peer']}): best {best:.3f} s of {peer['epoch_s']}, "
          f"test accuracy {peer['test_accuracy']:.4f}")
    if m:
        print(f"speed-up over PyTorch eager: {best / m['best_epoch_s']:.2f}x (target >= 2x)")
for p in ("bf16", "fp16"):
    a = ours.get("mlp_" + p)
    if a:
        print(f"mixed precision MLP, {p}: test accuracy {a['test_accuracy']:.4f} against fp32 "
              f"{a['fp32_test_accuracy']:.4f}: {a['points_from_fp32']:+.2f} points (target within 0.3), "
              f"best epoch {a['best_epoch_s']:.3f} s, loss scale {a['loss_scale']}, "
              f"{a['skipped_steps']} steps skipped")
w = ours.get("wide")
if w:
    print(f"wide layer 4096, forward+backward: fp32 {w['fp32_tflops']} TFLOP/s, "
          f"tf32 {w['tf32_tflops']} TFLOP/s, bf16 {w.get('bf16_tflops')} TFLOP/s = "
          f"{w.get('bf16_pct_of_peak')}% of the {w.get('bf16_peak_tflops')} TFLOP/s dense bf16 peak "
          f"(target >= 60%; the 16-bit rounding estimated at {w.get('bf16_rounding_ms_est')} ms "
          f"of {w.get('bf16_ms')} ms, products alone ~{w.get('bf16_gemm_tflops_est')} TFLOP/s), "
          f"fp16 {w.get('fp16_tflops')} TFLOP/s")
p = ours.get("mlp_paths")
if p:
    print(f"reference MLP, one epoch of {p['rows']} images at batch {p['batch']}, by input path:")
    for k in ("resident_graph", "eager", "streaming"):
        r = p.get(k)
        if r:
            print(f"  {k}: best {r['best_epoch_s']:.3f} s, {r['samples_per_s']:.0f} samples/s, "
                  f"{r['graph_replays']} graph replays, test accuracy {r['test_accuracy']:.4f}")
    if peer:
        # the peer trains on all 60000 images; compared per sample, as --rows may cut ours
        peer_sps = 60000 / min(peer["epoch_s"])
        print(f"  pytorch eager: best {min(peer['epoch_s']):.3f} s, {peer_sps:.0f} samples/s")
        for k in ("resident_graph", "streaming", "eager"):
            if p.get(k):
                print(f"  {k} over PyTorch eager: {p[k]['samples_per_s'] / peer_sps:.2f}x"
                      + (" (target >= 2x)" if k == "resident_graph" else ""))
c = ours.get("ceilings")
if c:
    print(f"ceilings: gemm {c['gemm_gflops']:.0f} GFLOP/s ({c['gemm']}), copy {c['copy_gbs']:.0f} GB/s")
PY
  exit $rc
}

cmd="${1:-}"
shift || true
case "$cmd" in
  prepare) prepare "$@" ;;
  run) run "$@" ;;
  *) echo "usage: $0 prepare [BUILD_DIR [--emulated]] | run [GPU_CHECK_DIR] [--memcheck] [--no-peer]" >&2
     exit 2 ;;
esac
