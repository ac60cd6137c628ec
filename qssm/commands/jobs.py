"""qssm submit / status / results / cancel / resume: durable QPU jobs in the job store."""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
import time

from qssm import args as types
from qssm.app.durable import cancel_job, create_job, run_job, spawn_worker
from qssm.app.job import prepare
from qssm.commands import help_for
from qssm.commands.run import add_overrides, apply_overrides, format_run
from qssm.errors import QssmError
from qssm.jobs.spec import load_spec
from qssm.jobs.store import JobStore


def _store(args, create: bool = False):
    """Only `submit` creates a store; the other commands read one that exists (and say if it does not)."""
    return JobStore(args.store, create=create)


def register(sub) -> None:
    def add(name, func):
        p = sub.add_parser(name, help=help_for(name))
        p.add_argument("--store", help="job store file (default: $QSSM_STORE or ~/.local/share/qssm/jobs.sqlite)")
        p.set_defaults(func=func)
        return p

    p = add("submit", submit)
    p.add_argument("spec", help="job spec (TOML)")
    p.add_argument("--wait", action="store_true", help="run in this process with progress and print the result")
    p.add_argument("--yes", action="store_true", help="submit even if the estimate exceeds the spec's budget")
    add_overrides(p, "submit")  # --backend, --shots, --n as run and estimate take them
    p.add_argument("--cluster", type=types.cluster, help='simulators only: batches on Dask, "local:N" or tcp://host:8786')
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = add("status", status)
    p.add_argument("id", nargs="?", type=types.job_id, help="job id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("results", results)
    p.add_argument("id", type=types.job_id, help="job id")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = add("cancel", cancel)
    p.add_argument("id", type=types.job_id, help="job id")
    p = add("resume", resume)
    p.add_argument("id", type=types.job_id, help="job id")
    p.add_argument("--quiet", action="store_true", help="no progress (background workers)")
    p.add_argument("--force", action="store_true",
                   help="take the job over from a runner that still looks alive (its lease is fresh): use only "
                        "when you know that runner is gone or stuck")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def submit(args) -> int:
    spec = apply_overrides(load_spec(args.spec), args)
    store = _store(args, create=True)
    store.require_writable()
    job = prepare(spec)
    try:
        job_id, estimate = create_job(store, job, yes=args.yes)
    except BaseException:
        job.close()
        raise
    cost = f"estimated ${estimate['usd']:.2f}, {estimate['qpu_seconds']:.0f} QPU s, {int(estimate['tasks'])} tasks/jobs"
    if estimate.get("examples"):
        cost += f" (${estimate['usd_per_example']:.2f} per example)"
    if estimate.get("qpu_seconds_if_real") and not estimate["qpu_seconds"]:
        cost += f"; on the real device about {estimate['qpu_seconds_if_real']:.0f} QPU s"
    if x := (estimate.get("expected") or {}):  # an adaptive job: the price above is its cap
        cost += (f"; adaptive shots: that is the cap, expected ${x['usd']:.2f} ± {x['usd_stderr']:.2f} on {x['device']} "
                 f"(${x['usd_per_example']:.2f} per example; adaptive rounds on {x['twin']} for {x['sample']} of "
                 f"{x['examples']} examples)") if x["available"] else f"; adaptive shots: that is the cap ({x['why']})"
    if estimate.get("mode"):
        idle = estimate.get("session_idle_seconds") or 0.0
        cost += f"; priced as a {estimate['mode']}" + (f" incl. {idle:.0f} s of billed idle time" if idle else "")
    if args.wait:
        if not args.json:
            print(f"job {job_id} ({cost})")
        report = run_job(store, job_id, progress=not args.json, prepared=job)  # closes the job's backend
        print(json.dumps(report) if args.json else format_run(report))
        return 0
    job.close()
    pid = spawn_worker(store, job_id)
    if args.json:
        print(json.dumps({"job_id": job_id, "estimate": estimate, "worker_pid": pid}))
    else:
        print(job_id)
        print(f"submitted ({cost}); worker pid {pid}. Check with `qssm status {job_id}`, "
              f"collect with `qssm results {job_id}`")
    return 0


def _when(t) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "-"


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _estimated(j: dict, key: str) -> float:
    """A number from the job's preflight estimate (0 if it has none)."""
    v = (j["estimate"] or {}).get(key, 0)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else 0.0


def progress(j: dict, t: dict) -> dict:
    """Batches planned (the preflight's count until the run has planned them all), elapsed time,
    and an ETA from the pace of the batches done so far."""
    planned = max(t["batches"], int(_estimated(j, "batches")))
    finished = j["status"] in ("done", "failed", "cancelled")
    elapsed = max(0.0, (j["updated"] if finished else time.time()) - j["created"])
    eta = None
    if j["status"] == "running" and t["done"] and planned > t["done"] and t["first_claimed"]:
        eta = max(0.0, time.time() - t["first_claimed"]) * (planned - t["done"]) / t["done"]
    return {"planned_batches": planned, "elapsed_seconds": round(elapsed, 1),
            "eta_seconds": None if eta is None else round(eta, 1)}


def status(args) -> int:
    store = _store(args)
    if args.id is None:
        jobs = store.jobs()
        totals = [store.totals(j["id"]) for j in jobs]
        if args.json:
            print(json.dumps([{**{k: j[k] for k in ("id", "status", "backend", "created")},
                               "stalled": store.stalled(j), "done_batches": t["done"], **progress(j, t)}
                              for j, t in zip(jobs, totals)]))
            return 0
        if not jobs:
            print(f"no jobs in {store.path}")
        stalled = [store.stalled(j) for j in jobs]
        for j, t, stuck in zip(jobs, totals, stalled):
            state = "stalled" if stuck else j["status"]
            p = progress(j, t)
            eta = f"  ETA {_span(p['eta_seconds'])}" if p["eta_seconds"] is not None else ""
            print(f"{j['id']}  {state:<9}  {j['backend']:<22} {t['done']}/{p['planned_batches']} batches  "
                  f"{_span(p['elapsed_seconds'])}{eta}  {_when(j['created'])}")
        if any(stalled):
            print("stalled jobs lost their runner (killed, rebooted); continue one with `qssm resume JOB_ID`")
        return 0
    j = store.job(args.id)
    t = store.totals(args.id)
    stalled = store.stalled(j)
    if args.json:
        print(json.dumps({"id": j["id"], "status": j["status"], "stalled": stalled, "backend": j["backend"],
                          "error": j["error"], "estimate": j["estimate"], **t, **progress(j, t),
                          "runner": store.owner(args.id)}))
        return 0
    state = f"stalled ({j['status']}, no live runner)" if stalled else j["status"]
    print(f"job {j['id']}: {state} on {j['backend']}  (created {_when(j['created'])}, updated {_when(j['updated'])})")
    if j["error"]:
        print(f"  error: {j['error']}")
    runner = store.owner(args.id)
    if runner:
        print(f"  running in {runner}")
    if stalled:
        print(f"  its runner stopped (killed, rebooted, or lost its lease); continue it with `qssm resume {j['id']}`")
    p = progress(j, t)
    planned = f" ({_estimated(j, 'batches'):.0f} planned by the preflight)" if _estimated(j, "batches") else ""
    eta = f", ETA {_span(p['eta_seconds'])}" if p["eta_seconds"] is not None else ""
    print(f"  batches {t['done']}/{p['planned_batches']} done{planned}, elapsed {_span(p['elapsed_seconds'])}{eta}")
    # per batch: a pack's one provider job counts once for each batch in it
    print(f"  batch submissions {t['submissions']} acknowledged by the provider ({t['claims']} claimed; a claim the "
          f"provider never acknowledged cost nothing)" if t["claims"] != t["submissions"] else
          f"  batch submissions {t['submissions']} acknowledged by the provider")
    print(f"  cost ${t['cost_usd']:.2f} spent of ${_estimated(j, 'usd'):.2f} estimated; QPU seconds "
          f"{t['qpu_seconds']:.0f} used of {_estimated(j, 'qpu_seconds'):.0f} estimated")
    if t["usage_pending"]:
        print(f"  usage pending for {t['usage_pending']} batches: the provider has not settled it yet; "
              f"`qssm resume {j['id']}` fills it in")
    for key, wave, pos, state, attempts, cost, handle, error in store.batches(args.id):
        ids = ",".join(store.parse_handle(args.id, key, handle).job_ids) if handle else "-"
        print(f"  trip {wave} #{pos:<3} {key[:12]} {state:<9} {ids[:60]}" + (f"  {error}" if error else ""))
    return 0


def results(args) -> int:
    store = _store(args)
    j = store.job(args.id)
    report = j["report"]
    if j["status"] != "done" and not (j["status"] == "cancelled" and report):
        hint = f"resume it with `qssm resume {args.id}`" if j["status"] in ("queued", "running") else j["error"] or ""
        raise QssmError(f"job {args.id} is {j['status']}, no results yet; {hint}".rstrip("; "))
    try:
        text = format_partial(report) if report.get("partial") else format_run(report)  # checks it, too
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:  # edited behind qssm's back
        raise QssmError(f"store is corrupt: {store.path}: job {args.id}'s report lacks or mistypes "
                        f"{str(e)[:60]}; restore the store from a backup, or submit the job again") from None
    if args.json:
        if report.get("partial"):  # the finished batches' own results, as the store holds them
            report = dict(report, results={b["key"]: _arrays(store.batch(args.id, b["key"]).result)
                                           for b in report["finished_batches"]})
        print(json.dumps(report))
    else:
        print(text + ("\n  (cancelled after its last batch finished)"
                      if report.get("cancelled") and not report.get("partial") else ""))
    return 0


def _arrays(result) -> dict:
    out = {"counts": [c.tolist() for c in result.counts]} if result.counts else {}
    if result.values is not None:
        out.update(values=result.values.tolist(), stderr=result.stderr.tolist())
    return out


def format_partial(r: dict) -> str:
    """A cancelled job's partial result: the batches that finished before it stopped."""
    lines = [f"job {r['job_id']} on {r['backend']}: CANCELLED, partial result "
             f"({len(r['finished_batches'])} of {r['store_batches']} batches finished, "
             f"{r['store_submissions']} provider submissions, ${r['store_cost_usd']:.2f} spent)"]
    for b in r["finished_batches"]:
        lines.append(f"  trip {b['round_trip']} #{b['position']:<3} {b['key'][:12]} {b['template'] or '-':<16} {b['shape']}")
    lines.append(f"  their values and outcome counts: `qssm results {r['job_id']} --json`")
    return "\n".join(lines)


def cancel(args) -> int:
    store = _store(args)
    store.require_writable()  # before any provider job is cancelled
    n = cancel_job(store, args.id)
    print(f"job {args.id} cancelled ({n} provider jobs cancelled)")
    return 0


def resume(args) -> int:
    def log(message: str) -> None:  # notes (a cancelled job continued, batches resubmitted and why)
        print(message, file=sys.stderr if not args.quiet else sys.stdout, flush=True)

    report = run_job(_store(args), args.id, progress=not (args.quiet or args.json), force=args.force, log=log)
    if args.json:
        print(json.dumps(report))
    elif not args.quiet:
        print(format_run(report))
    return 0
