#!/usr/bin/python3
"""Peer for the optimization benchmark: PyTorch doing the same optimizations to the same
trained weights. It reads an Espalier MLP (NAME.json + NAME.safetensors, a chain of Dense
layers with ReLU between them and an optional final Softmax), builds the same network in
PyTorch, and measures fp32, int8 dynamic (torch.ao.quantization.quantize_dynamic), int8
static (eager mode: QuantStub/DeQuantStub, min/max observers, calibrated on training
batches), and 90% magnitude pruning (torch.nn.utils.prune.l1_unstructured, applied and
made permanent): test accuracy, batch-1 latency (median and 95th percentile) and rows/s
at batches 64 and 256. Prints one JSON object.

  /usr/bin/python3 bench/peer_torch_optimize.py MODEL.json [--threads 1]
"""
import argparse
import gzip
import json
import os
import struct
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

DATA = "/usr/share/datasets/fashion-mnist"


def idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, = struct.unpack(">I", raw[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    n, = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        if t["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {t['dtype']}; the peer reads fp32 models")
        a, b = t["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(raw[base + a:base + b], "<f4")
                                     .reshape(t["shape"]).copy())
    return out


def build(model_json):
    tensors = read_safetensors(os.path.splitext(model_json)[0] + ".safetensors")
    layers = sorted({int(k.split(".")[1]) for k in tensors if k.endswith(".weight")})
    mods = [nn.Flatten()]
    for j, i in enumerate(layers):
        w, b = tensors[f"layers.{i}.weight"], tensors[f"layers.{i}.bias"]
        lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(w)
            lin.bias.copy_(b)
        mods.append(lin)
        if j + 1 < len(layers):
            mods.append(nn.ReLU())
    return nn.Sequential(*mods).eval()


class Static(nn.Module):
    """Eager-mode static quantization wrapper."""

    def __init__(self, body):
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.body = body
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.body(self.quant(x)))


def timing(model, x1, xb):
    out = {}
    with torch.no_grad():
        for _ in range(300):
            model(x1)
        samples = []
        for _ in range(200):
            t0 = time.perf_counter()
            for _ in range(20):
                model(x1)
            samples.append((time.perf_counter() - t0) / 20 * 1e6)
        samples.sort()
        out["latency_us"] = samples[len(samples) // 2]
        out["latency_p95_us"] = samples[int(len(samples) * 0.95)]
        for B in (64, 256):
            x = xb[:B]
            for _ in range(20):
                model(x)
            reps = max(20, 20000 // B)
            t0 = time.perf_counter()
            for _ in range(reps):
                model(x)
            out[f"rows_per_s_{B}"] = reps * B / (time.perf_counter() - t0)
    return out


def accuracy(model, x, y):
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calib-batches", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.set_flush_denormal(True)
    engines = torch.backends.quantized.supported_engines
    torch.backends.quantized.engine = "fbgemm" if "fbgemm" in engines else (
        "onednn" if "onednn" in engines else "qnnpack")

    xtr = torch.from_numpy(idx(f"{DATA}/train-images-idx3-ubyte.gz").astype(np.float32) / 255.0)
    xte = torch.from_numpy(idx(f"{DATA}/t10k-images-idx3-ubyte.gz").astype(np.float32) / 255.0)
    yte = torch.from_numpy(idx(f"{DATA}/t10k-labels-idx1-ubyte.gz").astype(np.int64))
    x1, xb = xte[:1], xte[:256]
    result = {"peer": f"pytorch {torch.__version__}", "threads": a.threads,
              "quantized_engine": torch.backends.quantized.engine, "variants": {}}

    fp32 = build(a.model)
    result["variants"]["fp32"] = dict(accuracy=accuracy(fp32, xte, yte), **timing(fp32, x1, xb))

    dyn = torch.ao.quantization.quantize_dynamic(build(a.model), {nn.Linear}, dtype=torch.qint8)
    result["variants"]["int8-dynamic"] = dict(accuracy=accuracy(dyn, xte, yte),
                                              **timing(dyn, x1, xb))

    st = Static(build(a.model)).eval()
    st.qconfig = torch.ao.quantization.get_default_qconfig(torch.backends.quantized.engine)
    torch.ao.quantization.prepare(st, inplace=True)
    with torch.no_grad():
        for i in range(a.calib_batches):
            st(xtr[i * 32:(i + 1) * 32])
    torch.ao.quantization.convert(st, inplace=True)
    result["variants"]["int8-static"] = dict(accuracy=accuracy(st, xte, yte),
                                             **timing(st, x1, xb))

    pr = build(a.model)
    for m in pr:
        if isinstance(m, nn.Linear):
            prune.l1_unstructured(m, "weight", amount=0.9)
            prune.remove(m, "weight")
    result["variants"]["pruned-90"] = dict(accuracy=accuracy(pr, xte, yte), **timing(pr, x1, xb))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
