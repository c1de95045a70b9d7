#!/usr/bin/python3
"""Our runtime against ONNX Runtime on the same exported models, same threads, one run
(the export issue's benchmark).

Trains the reference MLP (or takes --model), makes its int8 static variant with
`espalier-cli quantize`, exports both with `espalier-cli export --format onnx`, then times:
  ours  `espalier-cli compare` (the kernels each variant runs on: fp32 dense or int8),
        batch-1 median latency and rows/s at a 10,000-row batch
  peer  ../shared/peers/ort_bench.js in onnxruntime-node 1.30.0 on the exported file:
        batch-1 latency (through Node's binding) and one 10,000-row batch
for 1 and 2 threads, and prints ours / peer ratios (below 1: we are faster).

Usage: bench/bench-export.py [--build build] [--model MODEL.json] [--epochs 3]
Needs the ONNX Runtime package under tests/onnx/node_modules or bench/node_modules
(build-aux/dev test installs it).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEERS = os.path.join(os.path.dirname(ROOT), "shared", "peers")


def run(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return p.stdout


def node_modules():
    for d in (os.environ.get("ESPALIER_ORT_NODE_MODULES"), os.path.join(ROOT, "tests", "onnx", "node_modules"),
              os.path.join(HERE, "node_modules")):
        if d and os.path.isdir(os.path.join(d, "onnxruntime-node")):
            return d
    raise SystemExit("onnxruntime-node is not installed: run build-aux/dev test once, or "
                     "npm install --ignore-scripts in tests/onnx")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--model", help="a trained fp32 model (default: train the reference MLP)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--json")
    a = ap.parse_args()
    cli = os.path.join(a.build, "src", "cli", "espalier-cli")
    work = tempfile.mkdtemp(prefix="espalier-bench-export-")
    fp32 = a.model or os.path.join(work, "mlp.json")
    if not a.model:
        print(f"training the reference MLP ({a.epochs} epochs) ...", file=sys.stderr)
        run([cli, "train", "--data", "fashion-mnist", "--model", "mlp", "--epochs", str(a.epochs),
             "--output", fp32])
    int8 = os.path.join(work, "mlp-int8.json")
    run([cli, "quantize", fp32, "--mode", "int8-static", "--epochs", "0", "--output", int8])
    mods = node_modules()
    results = {}
    for name, model in (("fp32", fp32), ("int8 static", int8)):
        onnx = os.path.join(work, os.path.splitext(os.path.basename(model))[0] + ".onnx")
        run([cli, "export", model, "--format", "onnx", "--output", onnx])
        for threads in (1, 2):
            table = os.path.join(work, "table.json")
            run([cli, "compare", model, "--threads", str(threads), "--batch", str(a.rows),
                 "--seconds", "1", "--json", table])
            ours = json.load(open(table))[0]
            env = dict(os.environ, NODE_PATH=mods, ORT_INPUT_DIMS="1,28,28")
            out = run(["node", os.path.join(PEERS, "ort_bench.js"), onnx, str(threads), str(a.rows)], env)
            peer = json.loads(out.strip().splitlines()[-1])
            peer_ms = peer["batch_ms"]
            results[(name, threads)] = {
                "ours_b1_us": ours["latency_us"], "ours_batch_ms": 1e3 * a.rows / ours["rows_per_second"],
                "ours_exec": ours["exec"], "peer_b1_us": peer["latency_batch1_us"], "peer_batch_ms": peer_ms,
                "onnx_bytes": os.path.getsize(onnx)}

    print(f"\nSame exported models, ours (espalier-cli compare) against ONNX Runtime "
          f"(onnxruntime-node), {a.rows}-row batch:")
    print(f"{'model':<12} {'thr':>3} {'ours b=1 us':>12} {'ORT b=1 us':>11} {'ratio':>6} "
          f"{'ours batch ms':>14} {'ORT batch ms':>13} {'ratio':>6}")
    for (name, threads), r in results.items():
        print(f"{name:<12} {threads:>3} {r['ours_b1_us']:12.2f} {r['peer_b1_us']:11.2f} "
              f"{r['ours_b1_us'] / r['peer_b1_us']:6.3f} {r['ours_batch_ms']:14.2f} "
              f"{r['peer_batch_ms']:13.2f} {r['ours_batch_ms'] / r['peer_batch_ms']:6.3f}")
    print("\nORT's batch-1 figure includes Node's binding (a few us per call); ours is a C call.")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({f"{k[0]} t{k[1]}": v for k, v in results.items()}, f, indent=1)


if __name__ == "__main__":
    main()
