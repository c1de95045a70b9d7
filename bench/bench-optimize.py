#!/usr/bin/python3
"""The optimization issue's targets, measured in one run against PyTorch doing the same.

Trains the reference MLP (Flatten 28x28 -> Dense 128 ReLU -> Dense 10) on Fashion-MNIST
with espalier-cli, then makes its variants with espalier-cli prune / quantize / reduce and
measures them all with espalier-cli compare (test accuracy on the kernels that run each
variant, batch-1 latency median and p95, rows/s at batches 64 and 256, size). The peer,
bench/peer_torch_optimize.py, loads the same trained weights into PyTorch and applies its
own int8 (dynamic and static) quantization and 90% magnitude pruning, same threads.

Targets (issue 4):
  unstructured  90% sparsity, <= 1.0 point lost after fine-tuning
  structured    half the hidden neurons removed, <= 1.0 point lost, batch-1 latency >= 1.8x better
  int8 static   <= 0.5 point lost, weights >= 3.9x smaller, >= 2x faster than our fp32 at
                batch 64 and 256, no slower at batch 1
  reduction     three hidden layers to two: distillation recovers >= half of what plain
                fine-tuning leaves lost

Usage: bench/bench-optimize.py [--build build] [--threads 1] [--epochs 5] [--json out.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return p.stdout


def compare(cli, models, threads, batch, work):
    path = os.path.join(work, f"table-{batch}.json")
    run([cli, "compare", "--threads", str(threads), "--batch", str(batch), "--seconds", "1",
         "--json", path] + models)
    with open(path) as f:
        rows = json.load(f)
    return {os.path.splitext(os.path.basename(m))[0]: r for m, r in zip(models, rows)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=5, help="training epochs of the baselines")
    ap.add_argument("--finetune", type=int, default=2, help="fine-tuning epochs of the variants")
    ap.add_argument("--json")
    ap.add_argument("--keep", help="keep the models in this directory")
    a = ap.parse_args()
    cli = os.path.join(a.build, "src", "cli", "espalier-cli")
    work = a.keep or tempfile.mkdtemp(prefix="espalier-bench-opt-")
    os.makedirs(work, exist_ok=True)
    w = lambda n: os.path.join(work, n + ".json")
    ft = ["--epochs", str(a.finetune)]
    t = ["--threads", str(a.threads)]

    print(f"training the reference MLP ({a.epochs} epochs) ...", file=sys.stderr)
    run([cli, "train", "--data", "fashion-mnist", "--model", "mlp", "--epochs", str(a.epochs),
         "--output", w("mlp")])
    print("pruning, quantizing ...", file=sys.stderr)
    run([cli, "prune", w("mlp"), "--method", "magnitude", "--sparsity", "0.9", "--output",
         w("pruned90")] + ft + t)
    run([cli, "prune", w("mlp"), "--method", "gradual", "--sparsity", "0.9", "--output",
         w("gradual90"), "--epochs", str(2 * a.finetune)] + t)
    run([cli, "prune", w("mlp"), "--method", "structured", "--keep", "0.5", "--output",
         w("structured50")] + ft + t)
    run([cli, "quantize", w("mlp"), "--mode", "int8-static", "--output", w("int8static")] + t)
    run([cli, "quantize", w("mlp"), "--mode", "int8-dynamic", "--output", w("int8dynamic")] + t)
    run([cli, "quantize", w("mlp"), "--mode", "fp16", "--output", w("fp16")] + t)
    run([cli, "quantize", w("mlp"), "--mode", "qat", "--output", w("qat")] + ft + t)

    print("layer reduction (three hidden layers to two) ...", file=sys.stderr)
    run([cli, "train", "--data", "fashion-mnist", "--spec",
         "flatten,dense:256,relu,dense:128,relu,dense:64,relu,dense:10,softmax",
         "--epochs", str(a.epochs), "--output", w("mlp3")])
    run([cli, "reduce", w("mlp3"), "--distill", "--compare", "--output", w("reduced")]
        + ft + t)

    names = ["mlp", "pruned90", "gradual90", "structured50", "int8static", "int8dynamic", "fp16",
             "qat", "mlp3", "reduced", "reduced-finetuned"]
    models = [w(n) for n in names if os.path.exists(w(n))]
    print("measuring (compare, batch 64 and 256) ...", file=sys.stderr)
    t64 = compare(cli, models, a.threads, 64, work)
    t256 = compare(cli, models, a.threads, 256, work)

    print("peer: PyTorch on the same weights ...", file=sys.stderr)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    p = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "peer_torch_optimize.py"), w("mlp"),
                        "--threads", str(a.threads)], capture_output=True, text=True, env=env)
    peer = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 else None
    if peer is None:
        sys.stderr.write(p.stderr)

    base = t256["mlp"]
    pt = lambda n: 100 * (base["accuracy"] - t256[n]["accuracy"])
    rows = []

    def target(name, value, goal, ok):
        rows.append((name, value, goal, "met" if ok else "MISSED"))

    target("unstructured 90%: points lost", f"{pt('pruned90'):.2f} (one shot + {a.finetune} ep), "
           f"{pt('gradual90'):.2f} (gradual)", "<= 1.0", min(pt("pruned90"), pt("gradual90")) <= 1.0)
    target("  zeros among all parameters (biases kept)", f"{100 * t256['pruned90']['sparsity']:.2f}%",
           "", True)
    d, s = t256["pruned90"]["dense_latency_us"], t256["pruned90"]["sparse_latency_us"]
    target("  batch-1 dense / sparse kernels", f"{d:.2f} / {s:.2f} us ({t256['pruned90']['exec']} chosen)",
           "faster one used", True)
    sl = base["latency_us"] / t256["structured50"]["latency_us"]
    target("structured 50%: points lost", f"{pt('structured50'):.2f}", "<= 1.0", pt("structured50") <= 1.0)
    target("  batch-1 latency gain", f"{sl:.2f}x ({base['latency_us']:.2f} -> "
           f"{t256['structured50']['latency_us']:.2f} us)", ">= 1.8x", sl >= 1.8)
    q = "int8static"
    target("int8 static: points lost", f"{pt(q):.2f}", "<= 0.5", pt(q) <= 0.5)
    sz = base["size_bytes"] / t256[q]["size_bytes"]
    target("  weights smaller", f"{sz:.2f}x", ">= 3.9x", sz >= 3.9)
    s64 = t64[q]["rows_per_second"] / t64["mlp"]["rows_per_second"]
    s256 = t256[q]["rows_per_second"] / base["rows_per_second"]
    target("  speed-up at batch 64", f"{s64:.2f}x", ">= 2x", s64 >= 2)
    target("  speed-up at batch 256", f"{s256:.2f}x", ">= 2x", s256 >= 2)
    b1 = base["latency_us"] / t256[q]["latency_us"]
    target("  batch-1 speed-up", f"{b1:.2f}x ({base['latency_us']:.2f} -> {t256[q]['latency_us']:.2f} us)",
           ">= 1x", b1 >= 1)
    rec = None
    if "reduced" in t256 and "reduced-finetuned" in t256:
        parent = t256["mlp3"]["accuracy"]
        lost_ft = parent - t256["reduced-finetuned"]["accuracy"]
        lost_kd = parent - t256["reduced"]["accuracy"]
        rec = (lost_ft - lost_kd) / lost_ft if lost_ft > 0 else float("inf")
        target("reduction 3->2 hidden: points lost", f"fine-tune {100 * lost_ft:.2f}, distill "
               f"{100 * lost_kd:.2f}", "", True)
        target("  distillation recovers of what fine-tuning leaves lost",
               "nothing left lost" if lost_ft <= 0 else f"{100 * rec:.0f}%", ">= 50%",
               lost_ft <= 0 or rec >= 0.5)

    print(f"\nEspalier variants, {a.threads} thread(s) (compare):")
    print(f"{'variant':<18} {'format':<13} {'exec':<7} {'acc %':>7} {'us b=1':>8} {'p95':>8} "
          f"{'rows/s b64':>11} {'rows/s b256':>12} {'size':>9}")
    for n in t256:
        r = t256[n]
        print(f"{n:<18} {r['format']:<13} {r['exec']:<7} {100 * r['accuracy']:7.2f} "
              f"{r['latency_us']:8.2f} {r['latency_p95_us']:8.2f} {t64[n]['rows_per_second']:11.0f} "
              f"{r['rows_per_second']:12.0f} {r['size_bytes']:9d}")
    if peer:
        print(f"\nPeer: {peer['peer']} ({peer['quantized_engine']}), same weights, {a.threads} thread(s):")
        ours = {"fp32": "mlp", "int8-dynamic": "int8dynamic", "int8-static": "int8static",
                "pruned-90": "pruned90"}
        print(f"{'variant':<14} {'acc % (ours)':>13} {'us b=1 (ours)':>15} {'rows/s b64 (ours)':>22} "
              f"{'rows/s b256 (ours)':>22} {'b=1 ours/peer':>14}")
        for k, r in peer["variants"].items():
            o = ours[k]
            print(f"{k:<14} {100 * r['accuracy']:5.2f} ({100 * t256[o]['accuracy']:5.2f}) "
                  f"{r['latency_us']:7.1f} ({t256[o]['latency_us']:5.2f}) "
                  f"{r['rows_per_s_64']:10.0f} ({t64[o]['rows_per_second']:9.0f}) "
                  f"{r['rows_per_s_256']:10.0f} ({t256[o]['rows_per_second']:9.0f}) "
                  f"{t256[o]['latency_us'] / r['latency_us']:14.3f}")
    print("\nTargets:")
    for r in rows:
        print(f"  {r[0]:<52} {r[1]:<40} {r[2]:<9} {r[3]}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"b64": t64, "b256": t256, "peer": peer, "targets": rows}, f, indent=1)
    print(f"\nmodels in {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
