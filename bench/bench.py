#!/usr/bin/python3
"""Espalier against its peers, in one run, reported as ratios.

What it measures (the targets of the engine issue):
  speed     one epoch of the reference MLP on Fashion-MNIST at batch 128 and 32, against
            ../shared/peers/torch_mlp.py (PyTorch, same threads, run first in the same
            invocation); target ratios <= 0.5 (batch 128) and <= 0.4 (batch 32)
  inference batch-1 latency (target < 5 us) and 10,000 rows against ONNX Runtime
            (../shared/peers/ort_bench.js) on the same weights, same threads
  memory    peak resident memory of `espalier-cli train` (target <= 150 MB) against
            PyTorch's peak for the same epoch
  accuracy  with --accuracy: mlp 10 epochs (>= 88.0%), lenet 10 epochs (>= 90.5%), spiral
            (>= 97% training accuracy); slow, minutes

Usage: bench/bench.py [--build build] [--threads 2] [--accuracy] [--json out.json]
Needs python3-torch (the peer), python3-onnx and Node's onnxruntime-node@1.30.0 for the
ONNX Runtime peer (installed with --ignore-scripts under bench/node_modules), and
dataset-fashion-mnist.
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
PEERS = os.path.join(os.path.dirname(ROOT), "shared", "peers")


def peak_rss_mb(cmd, env=None):
    """Peak RSS of one command, measured in a fresh Python child so that earlier
    children do not mask it."""
    code = ("import resource,subprocess,sys;"
            "p=subprocess.run(sys.argv[1:],stdout=subprocess.PIPE,stderr=subprocess.PIPE);"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024.0);"
            "sys.stdout.write(p.stdout.decode());sys.exit(p.returncode)")
    p = subprocess.run([sys.executable, "-c", code] + cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"failed: {' '.join(cmd)}")
    first, _, rest = p.stdout.partition("\n")
    return float(first), rest


def cli_events(out):
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def torch_peer(batch, threads, epochs=1):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    peak, out = peak_rss_mb(["/usr/bin/python3", os.path.join(PEERS, "torch_mlp.py"),
                             "--epochs", str(epochs), "--batch", str(batch),
                             "--threads", str(threads)], env)
    r = json.loads(out.strip().splitlines()[-1])
    r["peak_rss_mb"] = peak
    return r


def espalier_train(cli, batch, threads, epochs=1, model="mlp", extra=(), output=None):
    cmd = [cli, "train", "--data", "fashion-mnist", "--model", model, "--epochs", str(epochs),
           "--batch", str(batch), "--json", "--val", "0"] + (["--threads", str(threads)] if threads else []) + list(extra)
    if output:
        cmd += ["-o", output]
    peak, out = peak_rss_mb(cmd)
    ev = cli_events(out)
    secs = [e["seconds"] for e in ev if e["event"] == "epoch"]
    acc = [e["accuracy"] for e in ev if e["event"] == "metrics"]
    return {"epoch_s": secs, "test_accuracy": acc[-1] if acc else None, "peak_rss_mb": peak}


def export_onnx_for_peer(model_json, path):
    """Write the trained MLP's weights as an ONNX graph for the ONNX Runtime peer, with
    Debian's python3-onnx (the project's own exporter is a later issue)."""
    import struct
    import onnx
    from onnx import helper, TensorProto

    meta = json.load(open(model_json))
    st = os.path.join(os.path.dirname(model_json), meta["weights"]["file"])
    raw = open(st, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    inits, nodes = [], []
    t = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        t[name] = (info["shape"], data[b:e])
    prev = "input"
    nodes.append(helper.make_node("Flatten", [prev], ["flat"], axis=1))
    prev = "flat"
    layers = meta["architecture"]["layers"]
    for i, layer in enumerate(layers):
        kind = layer["kind"]
        if kind == "dense":
            w, b = f"layers.{i}.weight", f"layers.{i}.bias"
            for nm in (w, b):
                shape, blob = t[nm]
                inits.append(helper.make_tensor(nm, TensorProto.FLOAT, shape, blob, raw=True))
            nodes.append(helper.make_node("Gemm", [prev, w, b], [f"y{i}"], transB=1))
            prev = f"y{i}"
        elif kind == "relu":
            nodes.append(helper.make_node("Relu", [prev], [f"y{i}"]))
            prev = f"y{i}"
        elif kind == "softmax":
            nodes.append(helper.make_node("Softmax", [prev], [f"y{i}"], axis=1))
            prev = f"y{i}"
    nodes[-1].output[0] = "output"
    graph = helper.make_graph(nodes, "mlp",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 10])],
                              inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, path)


def ort_peer(onnx_path, threads):
    mods = os.path.join(HERE, "node_modules")
    if not os.path.isdir(os.path.join(mods, "onnxruntime-node")):
        subprocess.run(["npm", "install", "--silent", "--ignore-scripts", "--prefix", HERE,
                        "onnxruntime-node@1.30.0"], check=True, capture_output=True)
    env = dict(os.environ, NODE_PATH=mods, ORT_INPUT_DIMS="1,28,28")
    out = subprocess.run(["node", os.path.join(PEERS, "ort_bench.js"), onnx_path, str(threads), "10000"],
                         capture_output=True, text=True, env=env, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--threads", type=int, default=2,
                    help="threads for the peers; Espalier gets the same cores and chooses its "
                         "compute threads itself unless --espalier-threads is given")
    ap.add_argument("--espalier-threads", type=int, default=0)
    ap.add_argument("--accuracy", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    cli = os.path.join(a.build, "src", "cli", "espalier-cli")
    tmp = tempfile.mkdtemp(prefix="espalier-bench-")
    res = {"threads": a.threads}
    # Warm the dataset cache so the epoch timings compare compute, not the first parse.
    subprocess.run([cli, "info", "--model", "mlp", "--data", "fashion-mnist"], capture_output=True)

    for batch in (128, 32):
        peer = torch_peer(batch, a.threads)
        ours = espalier_train(cli, batch, a.espalier_threads)
        ratio = ours["epoch_s"][0] / peer["epoch_s"][0]
        res[f"epoch_b{batch}"] = {"pytorch_s": peer["epoch_s"][0], "espalier_s": ours["epoch_s"][0],
                                  "ratio": round(ratio, 3),
                                  "target": 0.5 if batch == 128 else 0.4,
                                  "pytorch_peak_mb": round(peer["peak_rss_mb"], 1),
                                  "espalier_peak_mb": round(ours["peak_rss_mb"], 1)}
        res.setdefault("pytorch_latency_us", peer["latency_batch1_us"])
        res.setdefault("pytorch_eval_10k_s", peer["eval_10k_s"])
        print(f"epoch batch {batch:3d}: espalier {ours['epoch_s'][0]:.3f} s, pytorch "
              f"{peer['epoch_s'][0]:.3f} s, ratio {ratio:.3f} (target <= {res[f'epoch_b{batch}']['target']}); "
              f"peak RSS {ours['peak_rss_mb']:.0f} MB vs {peer['peak_rss_mb']:.0f} MB", flush=True)

    # Inference on a trained model, against ONNX Runtime on the same weights.
    model = os.path.join(tmp, "mlp")
    espalier_train(cli, 128, a.espalier_threads, output=model)
    bench = cli_events(subprocess.run([cli, "bench", model + ".json", "--threads", str(a.threads), "--json"],
                                      capture_output=True, text=True, check=True).stdout)[-1]
    res["espalier_latency_us"] = round(bench["latency_batch1_us"], 2)
    res["espalier_10k_ms"] = round(bench["batch_ms"], 3)
    line = (f"inference: batch-1 {bench['latency_batch1_us']:.2f} us (target < 5; pytorch "
            f"{res['pytorch_latency_us']} us), 10k rows {bench['batch_ms']:.2f} ms")
    try:
        onnx_path = os.path.join(tmp, "mlp.onnx")
        export_onnx_for_peer(model + ".json", onnx_path)
        ort = ort_peer(onnx_path, a.threads)
        res["ort_latency_us"] = ort["latency_batch1_us"]
        res["ort_10k_ms"] = ort["batch_ms"]
        res["ratio_10k_vs_ort"] = round(bench["batch_ms"] / ort["batch_ms"], 3)
        line += (f" vs ONNX Runtime {ort['batch_ms']:.2f} ms, ratio {res['ratio_10k_vs_ort']:.3f} "
                 f"(target < 1); ORT batch-1 {ort['latency_batch1_us']} us through Node")
    except Exception as e:  # the ONNX Runtime peer is optional on machines without it
        line += f" (ONNX Runtime peer unavailable: {e})"
    print(line, flush=True)

    if a.accuracy:
        for name, epochs, batch, target in (("mlp", 10, 32, 0.880), ("lenet", 10, 64, 0.905)):
            t0 = time.time()
            r = espalier_train(cli, batch, a.espalier_threads, epochs=epochs, model=name)
            res[f"accuracy_{name}"] = {"test_accuracy": r["test_accuracy"], "target": target,
                                       "seconds": round(time.time() - t0, 1),
                                       "epoch_s": [round(s, 3) for s in r["epoch_s"]]}
            print(f"{name}: test accuracy {100 * r['test_accuracy']:.2f}% after {epochs} epochs "
                  f"(target >= {100 * target:.1f}%), {time.time() - t0:.0f} s", flush=True)
        out = subprocess.run([cli, "train", "--data", "spiral:n=300,arms=3,noise=0.2,seed=1",
                              "--model", "playground", "--test", "0", "--val", "0", "--json",
                              "-o", os.path.join(tmp, "spiral")], capture_output=True, text=True,
                             check=True).stdout
        ev = cli_events(subprocess.run([cli, "eval", os.path.join(tmp, "spiral.json"), "--split", "all",
                                        "--json"], capture_output=True, text=True, check=True).stdout)
        acc = [e["accuracy"] for e in ev if e["event"] == "metrics"][-1]
        res["accuracy_spiral_train"] = acc
        print(f"spiral (3 arms, 300 points): training accuracy {100 * acc:.2f}% (target >= 97%)")

    shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
