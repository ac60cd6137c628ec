"""The QLAM paper checkpoints through the whole pipeline (ISA circuits, the device's noise, shots) on
the full 10,000-image test sets: issue 22's noise story, the noise columns of the README's
paper-style table (docs/tables.py reads bench/experiments/paper_noise.json).

Per checkpoint x device:
1. the dry run plans the shots (`qssm plan`, qssm/app/plan.py) on the first --plan-n test images;
2. the test set runs at those shots in --chunks interleaved chunks (chunk c holds images c, c + k,
   c + 2k, ...), so every finished chunk is a sample of the whole set, not of its easy first half
   (MNIST's first 5,000 test images come from the cleaner writers). Each chunk is one JSON file
   under bench/experiments/paper_noise_chunks/, written when it finishes: a rerun skips finished chunks and
   reproduces the missing ones exactly (simulator seed 1 mixed with each batch's content key);
3. bench/experiments/paper_noise.json gets the pooled row: n, shots, seeds, accuracy ± se, exact accuracy on the
   same images, agreement; `subset` is true until all chunks are in.

    OMP_NUM_THREADS=1 python -m bench.experiments.paper_noise &   # one worker per core:
    OMP_NUM_THREADS=1 python -m bench.experiments.paper_noise &   # they share the chunk queue
    python -m bench.experiments.paper_noise --collect      # only pool the finished chunks
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import time
from pathlib import Path

import torch

from bench.harness import ROOT
from qssm.app.inference import run
from qssm.app.job import prepare
from qssm.app.plan import plan_spec
from qssm.jobs.spec import parse_spec
from qssm.models.tasks import Batch
from qssm.pipeline.build import build_pipeline

OUT = Path(__file__).resolve().parent / "paper_noise.json"
CHUNKS = Path(__file__).resolve().parent / "paper_noise_chunks"
CHECKPOINTS = ("qlam-smnist-full", "qlam-sfashion")
DEVICES = ("fake_fez", "fake_sherbrooke", "iqm_garnet")


def spec_for(ckpt: str, device: str, n: int, shots: int = 0, seed: int = 1):
    return parse_spec({"model": {"checkpoint": str(ROOT / "checkpoints" / f"{ckpt}.safetensors")},
                       "data": {"n": n}, "backend": {"name": f"dm:{device}", "shots": shots, "seed_simulator": seed}})


def planned_shots(ckpt: str, device: str, plan_n: int, confidence: float, root: Path = CHUNKS) -> dict:
    """The dry run's recommendation, stored beside the chunks (planned once per checkpoint x device)."""
    path = root / ckpt / device / "plan.json"
    if path.exists():
        return json.loads(path.read_text())
    start = time.perf_counter()
    p = plan_spec(spec_for(ckpt, device, plan_n), confidence)
    if p["recommended"] is None:
        raise SystemExit(f"{ckpt} on dm:{device}: no shot count meets confidence {confidence} on the first "
                         f"{plan_n} images (near-tied decisions); pass a lower --confidence")
    out = {"plan_n": plan_n, "confidence": p["confidence"], "shots": p["recommended_shots_per_circuit"],
           "circuits_per_example": p["circuits_per_example"], "shots_per_example": p["recommended"]["shots_per_example"],
           "noisy_accuracy_infinite": p["noisy_accuracy_infinite"], "exact_accuracy": p["exact_accuracy"],
           "seconds": time.perf_counter() - start}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    return out


def run_chunk(job, pipeline, shots: int, c: int, k: int) -> dict:
    """Chunk c of k through the device's one pipeline (its compile cache kept across chunks). The
    simulator seeds each batch with the backend seed and the batch's content key, so a chunk's
    numbers do not depend on which chunks ran before it in this process."""
    idx = torch.arange(c, len(job.data.targets), k)
    data = Batch(job.data.inputs[idx], job.data.targets[idx],
                 {key: (v[idx] if torch.is_tensor(v) else v) for key, v in job.data.meta.items()})
    start = time.perf_counter()
    r = run(dataclasses.replace(job, data=data), pipeline=pipeline, progress=False).report
    decisions = r["decisions"]
    targets = data.targets.tolist()
    with torch.no_grad():
        exact = job.model(data.inputs)
    exact = (exact[:, -1] if exact.dim() == 3 else exact).argmax(-1).tolist()
    return {"chunk": c, "chunks": k, "indices": f"range({c}, {len(job.data.targets)}, {k})", "n": len(targets),
            "shots": shots, "seed_simulator": job.spec.backend.seed_simulator,
            "correct": sum(d == t for d, t in zip(decisions, targets)),
            "exact_correct": sum(e == t for e, t in zip(exact, targets)),
            "agree": sum(d == e for d, e in zip(decisions, exact)), "decisions": decisions,
            "logit_error_mean": r["logit_error_mean"], "wall_seconds": time.perf_counter() - start}


def claim(path: Path) -> bool:
    """Take a chunk for this process: a `.running` file with its pid, created exclusively, so two
    workers started side by side share the queue; the claim of a process that died is taken over."""
    lock = path.with_suffix(".running")
    if lock.exists():
        try:
            os.kill(int(lock.read_text() or 0), 0)
            return False  # a live worker has it
        except (ProcessLookupError, ValueError):
            lock.unlink(missing_ok=True)
    try:
        with open(lock, "x") as f:
            f.write(str(os.getpid()))
    except FileExistsError:
        return False
    return True


def work(ckpts: list[str], devices: list[str], plan_n: int, confidence: float, k: int, n: int,
         root: Path = CHUNKS) -> None:
    """Every checkpoint's chunks on the first device, then the other devices' chunk by chunk in
    turn; each worker (start several side by side) takes the next chunk nobody has. If time runs
    out, the first device has whole test sets and the others equal interleaved subsets."""
    jobs = {}  # (ckpt, device) -> (shots, prepared job, pipeline): planned and loaded when first due
    order = ([(ckpt, devices[0], c) for ckpt in ckpts for c in range(k)]
             + [(ckpt, d, c) for c in range(k) for ckpt in ckpts for d in devices[1:]])
    try:
        for ckpt, device, c in order:
            path = root / ckpt / device / f"chunk{c:02d}of{k}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists() or not claim(path):
                continue
            if (ckpt, device) not in jobs:
                plan = planned_shots(ckpt, device, plan_n, confidence, root)
                print(f"{ckpt} on dm:{device}: {plan['shots']} shots per circuit (plan on {plan['plan_n']})", flush=True)
                job = prepare(spec_for(ckpt, device, n, plan["shots"]))
                jobs[ckpt, device] = (plan["shots"], job, build_pipeline(job.spec, job.backend, model=job.model))
            shots, job, pipeline = jobs[ckpt, device]
            out = run_chunk(job, pipeline, shots, c, k)
            path.write_text(json.dumps(out, indent=1) + "\n")
            path.with_suffix(".running").unlink()
            print(f"  {ckpt} {device} chunk {c}/{k}: {out['correct']}/{out['n']} (exact {out['exact_correct']}) "
                  f"{out['wall_seconds']:.0f} s", flush=True)
    finally:
        for _, job, _ in jobs.values():
            job.close()


def collect(k: int, root: Path = CHUNKS, out: Path = OUT) -> dict:
    """Pool each checkpoint x device's finished chunks (of a k-chunk split) into bench/experiments/paper_noise.json."""
    rows = {}
    for ckpt, device in itertools.product(CHECKPOINTS, DEVICES):
        d = root / ckpt / device
        chunks = [json.loads(p.read_text()) for p in sorted(d.glob(f"chunk*of{k}.json"))]
        if not chunks:
            continue
        plan = json.loads((d / "plan.json").read_text())
        n = sum(c["n"] for c in chunks)
        p, e = sum(c["correct"] for c in chunks) / n, sum(c["exact_correct"] for c in chunks) / n
        rows.setdefault(ckpt, {})[device] = {
            "n": n, "subset": len(chunks) < chunks[0]["chunks"], "chunks": [c["chunk"] for c in chunks],
            "of_chunks": chunks[0]["chunks"], "shots": chunks[0]["shots"],
            "seeds": [c["seed_simulator"] for c in chunks], "accuracy": p, "se": math.sqrt(p * (1 - p) / n),
            "exact_accuracy": e, "exact_se": math.sqrt(e * (1 - e) / n),
            "agreement": sum(c["agree"] for c in chunks) / n,
            "logit_error_mean": sum(c["logit_error_mean"] * c["n"] for c in chunks) / n,
            "wall_seconds": sum(c["wall_seconds"] for c in chunks), "plan": plan,
            "script": "bench/experiments/paper_noise.py"}
    out.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", nargs="+", choices=CHECKPOINTS, default=list(CHECKPOINTS))
    ap.add_argument("--devices", nargs="+", choices=DEVICES, default=list(DEVICES))
    ap.add_argument("--plan-n", type=int, default=200, help="test images the dry run plans the shots on")
    ap.add_argument("--confidence", type=float, default=0.99, help="the plan's target agreement with infinite shots")
    ap.add_argument("--chunks", type=int, default=20)
    ap.add_argument("--n", type=int, default=10_000, help="test images (the standard split: 10000)")
    ap.add_argument("--dir", type=Path, default=CHUNKS, help="where the chunks and plans go")
    ap.add_argument("--out", type=Path, default=OUT, help="the pooled results")
    ap.add_argument("--collect", action="store_true", help="only pool the finished chunks")
    args = ap.parse_args()
    torch.set_num_threads(1)
    if not args.collect:
        work(args.ckpt, args.devices, args.plan_n, args.confidence, args.chunks, args.n, args.dir)
    for ckpt, devices in collect(args.chunks, args.dir, args.out).items():
        for device, r in devices.items():
            print(f"{ckpt} dm:{device}: {r['accuracy']:.4f} ± {r['se']:.4f} (exact {r['exact_accuracy']:.4f}, "
                  f"agreement {r['agreement']:.4f}) n={r['n']}{' (subset)' if r['subset'] else ''} shots={r['shots']}")


if __name__ == "__main__":
    main()
