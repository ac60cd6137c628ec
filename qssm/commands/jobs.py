"""qssm submit / status / results / cancel / resume: durable QPU jobs in the job store."""

from __future__ import annotations

import datetime as dt
import json

from qssm import args as types
from qssm.errors import QssmError


def _store(args, create: bool = False):
    """Only `submit` creates a store; the other commands read one that exists (and say if it does not)."""
    from qssm.jobs.store import JobStore

    return JobStore(args.store, create=create)


def register(sub) -> None:
    def add(name, help_, func):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--store", help="job store file (default: $QSSM_STORE or ~/.local/share/qssm/jobs.sqlite)")
        p.set_defaults(func=func)
        return p

    p = add("submit", "estimate cost, record a job and run it in the background (or --wait)", submit)
    p.add_argument("spec", help="job spec (TOML)")
    p.add_argument("--wait", action="store_true", help="run in this process with progress and print the result")
    p.add_argument("--yes", action="store_true", help="submit even if the estimate exceeds the spec's budget")
    p.add_argument("--backend", help="override [backend] name")
    p.add_argument("--shots", type=types.shots, help="override [backend] shots")
    p.add_argument("--cluster", help='simulators only: batches on Dask, "local:N" or tcp://host:8786')
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = add("status", "list jobs, or show one job and its batches", status)
    p.add_argument("id", nargs="?", type=types.job_id, help="job id")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = add("results", "print a finished job's report", results)
    p.add_argument("id", type=types.job_id, help="job id")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p = add("cancel", "cancel a job's in-flight provider jobs and mark it cancelled", cancel)
    p.add_argument("id", type=types.job_id, help="job id")
    p = add("resume", "continue a job from the store (after a crash, a reboot or a closed laptop)", resume)
    p.add_argument("id", type=types.job_id, help="job id")
    p.add_argument("--quiet", action="store_true", help="no progress (background workers)")
    p.add_argument("--force", action="store_true",
                   help="take the job over from a runner that still looks alive (its lease is fresh): use only "
                        "when you know that runner is gone or stuck")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def submit(args) -> int:
    from qssm.commands.run import apply_overrides, format_run
    from qssm.jobs.run import create_job, run_job, spawn_worker
    from qssm.jobs.spec import load_spec

    spec = apply_overrides(load_spec(args.spec), args)
    store = _store(args, create=True)
    store.require_writable()
    job_id, estimate = create_job(store, spec, yes=args.yes)
    cost = f"estimated ${estimate['usd']:.2f}, {estimate['qpu_seconds']:.0f} QPU s, {int(estimate['tasks'])} tasks/jobs"
    if estimate.get("qpu_seconds_if_real") and not estimate["qpu_seconds"]:
        cost += f"; on the real device about {estimate['qpu_seconds_if_real']:.0f} QPU s"
    if estimate.get("mode"):
        idle = estimate.get("session_idle_seconds") or 0.0
        cost += f"; priced as a {estimate['mode']}" + (f" incl. {idle:.0f} s of billed idle time" if idle else "")
    if args.wait:
        if not args.json:
            print(f"job {job_id} ({cost})")
        report = run_job(store, job_id, progress=not args.json)
        print(json.dumps(report) if args.json else format_run(report))
        return 0
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


def status(args) -> int:
    store = _store(args)
    if args.id is None:
        jobs = store.jobs()
        if args.json:
            print(json.dumps([{**{k: j[k] for k in ("id", "status", "backend", "created")},
                               "stalled": store.stalled(j)} for j in jobs]))
            return 0
        if not jobs:
            print(f"no jobs in {store.path}")
        stalled = [store.stalled(j) for j in jobs]
        for j, stuck in zip(jobs, stalled):
            t = store.totals(j["id"])
            state = "stalled" if stuck else j["status"]
            print(f"{j['id']}  {state:<9}  {j['backend']:<22} {t['done']}/{t['batches']} batches  {_when(j['created'])}")
        if any(stalled):
            print("stalled jobs lost their runner (killed, rebooted); continue one with `qssm resume JOB_ID`")
        return 0
    j = store.job(args.id)
    t = store.totals(args.id)
    stalled = store.stalled(j)
    if args.json:
        print(json.dumps({"id": j["id"], "status": j["status"], "stalled": stalled, "backend": j["backend"],
                          "error": j["error"], "estimate": j["estimate"], **t, "runner": store.owner(args.id)}))
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
    pending = f" (+ {t['usage_pending']} batches whose usage the provider has not settled yet: `qssm resume " \
              f"{j['id']}` fills it in)" if t["usage_pending"] else ""
    print(f"  batches {t['done']}/{t['batches']} done, {t['submissions']} submissions, ${t['cost_usd']:.2f} spent" + pending)
    for key, wave, pos, state, attempts, cost, handle, error in store.batches(args.id):
        ids = ",".join(store.parse_handle(args.id, key, handle).job_ids) if handle else "-"
        print(f"  trip {wave} #{pos:<3} {key[:12]} {state:<9} {ids[:60]}" + (f"  {error}" if error else ""))
    return 0


def results(args) -> int:
    from qssm.commands.run import format_run

    store = _store(args)
    j = store.job(args.id)
    report = j["report"]
    if j["status"] != "done" and not (j["status"] == "cancelled" and report):
        hint = f"resume it with `qssm resume {args.id}`" if j["status"] in ("queued", "running") else j["error"] or ""
        raise QssmError(f"job {args.id} is {j['status']}, no results yet; {hint}".rstrip("; "))
    if args.json:
        if report.get("partial"):  # the finished batches' own results, as the store holds them
            report = dict(report, results={b["key"]: _arrays(store.batch(args.id, b["key"]).result)
                                           for b in report["finished_batches"]})
        print(json.dumps(report))
    elif report.get("partial"):
        print(format_partial(report))
    else:
        print(format_run(report) + ("\n  (cancelled after its last batch finished)" if report.get("cancelled") else ""))
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
    from qssm.jobs.run import cancel_job

    store = _store(args)
    store.require_writable()  # before any provider job is cancelled
    n = cancel_job(store, args.id)
    print(f"job {args.id} cancelled ({n} provider jobs cancelled)")
    return 0


def resume(args) -> int:
    from qssm.commands.run import format_run
    from qssm.jobs.run import run_job

    report = run_job(_store(args), args.id, progress=not (args.quiet or args.json), force=args.force)
    if args.json:
        print(json.dumps(report))
    elif not args.quiet:
        print(format_run(report))
    return 0
