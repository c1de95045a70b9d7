#!/usr/bin/python3
"""Data-parallel training (issue 7) measured on this machine, and a paper model beyond it.

Measured: the reference MLP (Flatten 28x28 -> Dense 128 ReLU -> Dense 10) and LeNet on
Fashion-MNIST with `espalier-cli train --distributed` under mpirun:
  1 rank  x 1 thread,  batch 32          the per-rank baseline (no communication)
  1 rank  x 2 threads, batch 32          the other way to use both cores
  2 ranks x 1 thread,  batch 32 per rank the data-parallel run (64 rows per step)
  1 rank  x 1 thread,  batch 64          the same rows per step on one rank
  2 ranks, staged                        the data-parallel run with ESPALIER_MPI_STAGE=1:
                                         gradients downloaded to a host buffer, reduced
                                         there and uploaded, as on a GPU whose MPI is not
                                         CUDA-aware (here a copy in host memory: its cost
                                         without the PCIe transfer)
samples/s over the training epochs (rows of every rank / wall time of the epochs), and the
share of that time each rank spent in communication (staging gradients, waiting for the
allreduce: espalier-distributed's own clock), and the part of it left exposed after
backward. And MPI_Allreduce itself by message size at 2 ranks (build/bench/bench-allreduce).

The paper model for 8-64 ranks: a step costs the measured compute of one rank (1 rank x 1
thread, batch 32: per-rank work stays fixed as ranks are added, weak scaling) plus a ring
allreduce of the gradient bytes n: 2(N-1) messages of latency a each and 2(N-1)/N x n
bytes through a link of bandwidth b:   t_ar = 2 (N-1) a + 2 (N-1)/N x n / b.
Without overlap a step is t_c + t_ar; with perfect overlap max(t_c, t_ar). The network
figures a and b are assumptions, stated in the table; the shared-memory ones of this
machine are measured.

On a shared machine other jobs take the cores at random moments, and a data-parallel step
waits for the slowest rank: each configuration runs --repeat times and the fastest run
is kept (the load average is printed with the results).

Usage: bench/bench-mpi.py [--build build] [--epochs 1] [--repeat 2] [--json out.json]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

# Networks for the paper model: (name, latency per message in s, bandwidth in bytes/s).
# Assumed, not measured: typical achieved figures for MPI over these links.
NETWORKS = [
    ("10 GbE, TCP (assumed: 20 us, 1.1 GB/s)", 20e-6, 1.1e9),
    ("100 Gb/s InfiniBand (assumed: 2 us, 11 GB/s)", 2e-6, 11e9),
]
RANKS = [2, 8, 16, 32, 64]


def mpirun(np):
    cmd = [shutil.which("mpirun") or "mpirun", "-np", str(np), "--bind-to", "none"]
    if os.geteuid() == 0:
        cmd.append("--allow-run-as-root")
    return cmd


def run(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.stderr.write(p.stdout + p.stderr)
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return p.stdout


def events(out):
    evs = []
    for line in out.splitlines():
        if line.startswith("{"):
            try:
                evs.append(json.loads(line))
            except ValueError:
                pass
    return evs


def allreduce(build):
    exe = os.path.join(build, "bench", "bench-allreduce")
    rows = [json.loads(l) for l in run(mpirun(2) + [exe, "--repeats", "50"]).splitlines()
            if l.startswith("{")]
    # The fastest of the repeats: the link's own cost, without the other jobs of a shared
    # machine (the medians are printed beside them).
    alpha = min(r["min"] for r in rows if r["bytes"] <= 256)
    # 2 ranks: a ring allreduce moves 2(N-1)/N n = n bytes per rank; the largest message
    # that still fits the caches of a 2-core machine sets the bandwidth
    big = [r for r in rows if (1 << 20) <= r["bytes"] <= (4 << 20)]
    beta = max(r["bytes"] / max(r["min"] - alpha, 1e-9) for r in big)
    return rows, alpha, beta


def train(cli, model, np, threads, batch, epochs, staged=False):
    cmd = mpirun(np) + [cli, "train", "--distributed", "--model", model, "--epochs", str(epochs),
                        "--batch", str(batch), "--threads", str(threads), "--val", "0",
                        "--json"]
    env = dict(os.environ, ESPALIER_MPI_STAGE="1") if staged else None
    evs = events(run(cmd, env))
    epochs_ev = [e for e in evs if e["event"] == "epoch"]
    summ = [e for e in evs if e["event"] == "distributed_summary"][0]
    seconds = sum(e["seconds"] for e in epochs_ev)
    rows = summ["rows_rank0"] * summ["ranks"]  # every rank trains an equal share
    comm = epochs_ev[-1]["comm_s"]
    steps = summ["steps"]
    return {
        "model": model, "ranks": np, "threads": threads, "batch": batch, "epochs": epochs,
        "staged": staged,
        "seconds": seconds, "samples_per_s": rows / seconds, "steps": steps,
        "comm_share": comm / seconds, "exposed_share": summ["exposed_comm_s"] / seconds,
        "step_s": seconds / steps, "comm_step_s": comm / steps,
        "grad_bytes": summ["allreduce_bytes"] / steps if steps else 0,
        "accuracy": epochs_ev[-1]["train_accuracy"],
    }


def paper_model(base, grad_bytes, networks):
    t_c = base["step_s"] - base["comm_step_s"]
    B = base["batch"]
    table = []
    for name, a, b in networks:
        for n in RANKS:
            t_ar = 2 * (n - 1) * a + 2 * (n - 1) / n * grad_bytes / b
            table.append({
                "network": name, "ranks": n, "t_compute": t_c, "t_allreduce": t_ar,
                "samples_per_s": n * B / (t_c + t_ar),
                "efficiency": t_c / (t_c + t_ar),
                "samples_per_s_overlap": n * B / max(t_c, t_ar),
            })
    return table


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2, help="runs per configuration, the fastest kept")
    ap.add_argument("--json")
    a = ap.parse_args()
    cli = os.path.join(a.build, "src", "cli", "espalier-cli")
    load = os.getloadavg()

    rows, alpha, beta = allreduce(a.build)
    print(f"Load average when started: {load[0]:.2f} ({os.cpu_count()} cores); "
          f"the fastest of {max(a.repeat, 1)} runs per configuration\n")
    print("MPI_Allreduce at 2 ranks, shared memory (50 repeats per size):\n")
    print("| bytes | median | fastest |")
    print("| ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['bytes']} | {r['seconds'] * 1e6:.1f} us | {r['min'] * 1e6:.1f} us |")
    print(f"\nfit (fastest): latency a = {alpha * 1e6:.2f} us, bandwidth b = {beta / 1e9:.2f} GB/s\n")

    results = {"load": load, "allreduce": rows, "alpha": alpha, "beta": beta, "runs": [],
               "model": {}}
    configs = [(1, 1, 32, False), (1, 2, 32, False), (2, 1, 32, False), (1, 1, 64, False),
               (2, 1, 32, True)]
    for model in ("mlp", "lenet"):
        runs = [max((train(cli, model, np, t, b, a.epochs, st) for _ in range(max(a.repeat, 1))),
                    key=lambda r: r["samples_per_s"])
                for np, t, b, st in configs]
        results["runs"] += runs
        print(f"{model}, Fashion-MNIST, {a.epochs} epoch(s):\n")
        print("| run | samples/s | communication | exposed after backward | step |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for r in runs:
            name = (f"{r['ranks']} rank{'s' if r['ranks'] > 1 else ''} x {r['threads']} "
                    f"thread{'s' if r['threads'] > 1 else ''}, batch {r['batch']}"
                    + (" each" if r['ranks'] > 1 else "")
                    + (", staged" if r['staged'] else ""))
            print(f"| {name} | {r['samples_per_s']:.0f} | {100 * r['comm_share']:.1f}% | "
                  f"{100 * r['exposed_share']:.1f}% | {r['step_s'] * 1e3:.2f} ms |")
        base, two = runs[0], runs[2]
        grad_bytes = two["grad_bytes"]
        nets = [("shared memory, measured here (a, b above)", alpha, beta)] + NETWORKS
        table = paper_model(base, grad_bytes, nets)
        results["model"][model] = {"grad_bytes": grad_bytes, "t_compute": table[0]["t_compute"],
                                   "table": table}
        print(f"\nPaper model: t_c = {table[0]['t_compute'] * 1e3:.3f} ms per step (1 rank, "
              f"batch 32), n = {grad_bytes / 1e3:.1f} kB of gradients per step\n")
        print("| network | ranks | allreduce | samples/s (no overlap) | efficiency | "
              "samples/s (full overlap) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for t in table:
            print(f"| {t['network']} | {t['ranks']} | {t['t_allreduce'] * 1e3:.3f} ms | "
                  f"{t['samples_per_s']:.0f} | {100 * t['efficiency']:.0f}% | "
                  f"{t['samples_per_s_overlap']:.0f} |")
        print()
    end = os.getloadavg()
    print(f"Load average at the end: {end[0]:.2f}")
    results["load_end"] = end
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
