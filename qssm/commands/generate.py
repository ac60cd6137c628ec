"""qssm generate CHECKPOINT: QMamba generation with the O(1) step cache, on any backend."""

from __future__ import annotations

import contextlib
import json

import torch

from qssm import args as types
from qssm.app.inference import evaluator_for
from qssm.app.preflight import paid_run
from qssm.backends.registry import get_backend
from qssm.commands import help_for
from qssm.errors import QssmError
from qssm.jobs.spec import BackendSpec, DataSpec, JobSpec
from qssm.models import checkpoint
from qssm.pipeline.evaluator import PipelineEvaluator


def register(sub) -> None:
    p = sub.add_parser("generate", help=help_for("generate"))
    p.add_argument("checkpoint")
    p.add_argument("--prompt", required=True, help="comma-separated token ids, e.g. 3,9,9,0")
    p.add_argument("-n", "--new", type=types.integer(1, 4096), default=8, help="tokens to generate")
    p.add_argument("--backend", default="exact")
    p.add_argument("--shots", type=types.shots, default=None)
    p.add_argument("--temperature", type=types.number(0.0, 100.0), default=0.0, help="0 is greedy")
    p.add_argument("--seed", type=types.seed, default=0)
    p.add_argument("--yes", action="store_true", help="on a paid backend: spend the price the preflight prints")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    model, _ = checkpoint.load(args.checkpoint)
    if not model.generates:
        raise QssmError(f"{args.checkpoint} is a {model.cfg.kind} model; generate needs a QMamba checkpoint")
    try:
        prompt = [int(t) for t in args.prompt.split(",")]
    except ValueError:
        raise QssmError(f"--prompt must be comma-separated token ids, got {args.prompt!r}") from None
    if not prompt or min(prompt) < 0 or max(prompt) >= model.cfg.vocab_size:
        raise QssmError(f"prompt token ids must be in 0..{model.cfg.vocab_size - 1}")
    tokens = torch.tensor([prompt])
    model = model.double()

    def generate(ev):
        with torch.no_grad():
            logits, cache = model(tokens, ev, return_cache=True)
            prefill = ev.round_trips
            out = model.generate(tokens, args.new, ev, temperature=args.temperature, seed=args.seed,
                                 prefill=(logits, cache))
        return out, prefill

    backend = None
    if args.backend != "exact" or args.shots:  # the submit preflight first: checks, price, --yes
        backend = get_backend(args.backend, seed=1)
        spec = JobSpec(checkpoint="", data=DataSpec(n=1), backend=BackendSpec(name=args.backend, shots=args.shots or 0))
        paid_run(spec, backend, model, lambda pipeline: len(generate(PipelineEvaluator(pipeline))[0]), args.yes,
                 f"generating {args.new} tokens", fewer="-n for fewer tokens")
    with contextlib.closing(evaluator_for(args.backend, shots=args.shots, backend=backend)) as ev:  # IBM Session
        out, prefill = generate(ev)
    decode = (ev.round_trips - prefill) / args.new
    result = {"prompt": prompt, "generated": out[0].tolist(), "backend": args.backend,
              "round_trips": ev.round_trips, "prefill_round_trips": prefill, "round_trips_per_token": decode,
              "naive_round_trips_per_token": model.cfg.n_layers * len(model.cfg.SUBCIRCUITS)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"prompt    {prompt}\ngenerated {result['generated']}")
        print(f"round trips: prefill {prefill} (any length), {decode:g} per generated token "
              f"(naive: {result['naive_round_trips_per_token']} per token)")
    return 0
