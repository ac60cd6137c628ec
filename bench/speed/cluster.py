"""Dask on paper: the wall time of a sweep that outgrows one machine, projected from costs measured
here on LocalClusters of 1 and 2 workers.

    python -m bench.speed.cluster [--images 20] [--json bench/speed/cluster.json]

The sweep: qlam-smnist (sMNIST, 1,000 test images, 14 tokens, 6 qubits) on 4 device snapshots
(dm:fake_fez, dm:fake_torino, dm:fake_sherbrooke, dm:iqm_garnet) at 3 shot counts (500, 2000,
8000): 12 cells of 1,000 images. One cell with `--images` images is run on warm LocalClusters of
1 and 2 single-threaded workers (and in-process), and split into

    serial S    work done in the dispatching process, whatever the workers: transpiling the
                templates, planning, the exact reference forward, expectations from counts;
    parallel W  simulation on the workers (measured as the 1-worker dispatch time);
    overhead o  per round trip, from shipping batches and gathering results (1-worker dispatch
                minus the in-process dispatch of the same batches).

Projection for N images and w workers (one cell after another; the simulation of a round trip's
batches scales with the number of bindings, which the images set):

    T(w) = S_fixed + S_per_image * N + W_per_image * N / w + o

S_fixed (the transpiles) is measured per cell, the rest per image; the 2-worker run checks the
model against a measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import torch

from bench import harness as C
from qssm.backends.cluster import local_cluster

TARGETS = ("dm:fake_fez", "dm:fake_torino", "dm:fake_sherbrooke", "dm:iqm_garnet")
SHOTS = (500, 2000, 8000)
IMAGES = 1000


def spec(images: int, backend: str = "dm:fake_fez", shots: int = 2000, cluster: str = ""):
    return C.job_spec("qlam-smnist", backend, images, shots, cluster=cluster)


def run(s) -> tuple[float, dict]:
    r = C.run_job(s)
    return r.seconds, r.report


def serial(r: dict, wall: float) -> float:
    """What the dispatching process spends outside dispatch."""
    return wall - r["seconds"].get("dispatch", 0.0)


def measure(images: int) -> dict:
    out = {"images": images}
    run(spec(2))  # warm-up: noise models, programs, imports
    wall, r = run(spec(images))
    fixed = r["seconds"].get("split", 0.0) + r["seconds"].get("compile", 0.0)  # transpiles: once per cell
    out["local"] = {"wall": wall, "dispatch": r["seconds"]["dispatch"], "serial": serial(r, wall), "fixed": fixed,
                    "executions": r["executions"]}
    for workers in (1, 2):
        with local_cluster(workers) as c:
            s = spec(images, cluster=c.scheduler_address)
            run(dataclasses.replace(s, data=dataclasses.replace(s.data, n=2)))  # warm the workers
            walls, reports = [], []
            for _ in range(2):
                w, r = run(s)
                walls.append(w)
                reports.append(r)
            wall = statistics.median(walls)
            r = reports[-1]
            out[f"workers_{workers}"] = {"wall": wall, "dispatch": r["seconds"]["dispatch"], "serial": serial(r, wall)}
    return out


def project(m: dict) -> dict:
    n = m["images"]
    one = m["workers_1"]
    work = m["local"]["dispatch"]  # the simulation itself, no shipping
    overhead = max(one["dispatch"] - work, 0.0)
    fixed = m["local"]["fixed"]
    s_per_image = (m["local"]["serial"] - fixed) / n
    model = lambda images, w: fixed + s_per_image * images + work / n * images / w + overhead  # noqa: E731
    predicted_2 = model(n, 2)
    cell = {w: model(IMAGES, w) for w in (1, 8, 32)}
    cells = len(TARGETS) * len(SHOTS)
    return {"serial_fixed": fixed, "serial_per_image": s_per_image, "work_per_image": work / n, "overhead_per_cell": overhead,
            "check_2_workers": {"measured": m["workers_2"]["wall"], "predicted": predicted_2},
            "cell_seconds": cell, "sweep_seconds": {w: cells * t for w, t in cell.items()}, "cells": cells}


def table(m: dict, p: dict, env: dict) -> str:
    hours = lambda s: f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min"  # noqa: E731
    lines = [f"qssm cluster projection  {env['date']}  {env['cpu']}  torch {env['torch']} on {env['device']}  "
             f"load average at start {env['load_average']}",
             f"measured: one cell of {m['images']} images (qlam-smnist, dm:fake_fez, 2000 shots): in-process "
             f"{m['local']['wall']:.1f} s, 1 worker {m['workers_1']['wall']:.1f} s, 2 workers "
             f"{m['workers_2']['wall']:.1f} s (model predicts {p['check_2_workers']['predicted']:.1f} s)",
             f"per image: {p['work_per_image']:.2f} s simulation (parallel), {p['serial_per_image']:.3f} s in the "
             f"dispatcher (serial); per cell: {p['serial_fixed']:.1f} s transpiling, {p['overhead_per_cell']:.1f} s "
             "shipping",
             "",
             f"| workers | one cell ({IMAGES} images) | sweep ({p['cells']} cells: {len(TARGETS)} targets x "
             f"{len(SHOTS)} shot counts) |",
             "| --- | --- | --- |"]
    for w in (1, 8, 32):
        lines.append(f"| {w} | {hours(p['cell_seconds'][w])} | {hours(p['sweep_seconds'][w])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--json", default=str(Path(__file__).resolve().parent / "cluster.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    env = C.environment("cluster")
    m = measure(args.images)
    p = project(m)
    print(table(m, p, env))
    Path(args.json).write_text(json.dumps({"environment": env, "measured": m, "projection": p}, indent=1))


if __name__ == "__main__":
    main()
