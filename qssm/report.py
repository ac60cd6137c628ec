"""Reports: the same plain data as JSON and as one self-contained HTML page with inline plots.

Sections render from whatever the report dict holds: a run summary (`qssm run`), transpilation per
target (`compile`), accuracy against shots (`shots_sweep`), QLAM error against segment length
(`segment_sweep`), QLAM accuracy against cost per target with its frontier (`split_frontier`, and
the `split_choice` of segment = "auto"), logit error against token position, accuracy by needle depth.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx

from qssm.pipeline.tracker import LABELS  # noqa: E402
from qssm.redact import redact  # noqa: E402

SUMMARY_KEYS = [
    ("job_id", "job"), ("backend", "backend"), ("calibration", "calibration"), ("shots", "shots per circuit"),
    ("n_examples", "examples"), ("T", "sequence length"), ("accuracy", "accuracy ± s.e."),
    ("exact_accuracy", "exact accuracy ± s.e."), ("agreement", "agreement with exact"),
    ("logit_error_max", "max logit error"), ("logit_error_mean", "mean logit error"),
    ("wall_seconds", "wall time (s)"),
]
# table columns as a person reads them; any other key is shown with its underscores as spaces
COLUMNS = {
    "target": "target", "template": "template", "layout": "physical qubits", "qubits": "qubits",
    "depth": "depth", "two_qubit": "2q gates", "swaps": "swaps", "duration_us": "duration (µs)",
    "success_probability": "P(success)", "cuts": "cuts", "sampling_overhead": "cut overhead",
    "swaps_cut": "swaps if cut", "cut_decision": "cutting", "backend": "backend", "shots": "shots",
    "accuracy": "accuracy", "accuracy_stderr": "± s.e.", "logit_error_mean": "mean logit error",
    "total_shots": "total shots", "wall_seconds": "wall (s)", "segment": "segment", "round_trips": "round trips",
    "purity": "purity", "label": "lever", "max_two_qubit": "max 2q", "circuits_per_image": "circuits / image",
    "shots_per_image": "shots / image", "qpu_seconds_per_image": "QPU s / image",
    "success_estimate": "P(success)", "exact_accuracy": "exact", "quartile": "quartile",
    "needle_position": "needle position", "n": "examples",
}
COMPILE_COLUMNS = ("target", "template", "layout", "depth", "two_qubit", "swaps", "duration_us",
                   "success_probability", "cuts", "sampling_overhead", "swaps_cut", "cut_decision")
# the legend names of the accuracy-against-shots plot: each backend once, the no-shots line apart
SHOTS_LEGEND = {"exact": "exact simulator + shot noise"}
EXACT_LINE = "exact expectation values (no shots)"
# the run's tracker (pipeline/tracker.py) names its own totals
COST_KEYS = list(LABELS.items())


def _draw_layout(ax, lay: dict) -> None:
    """The device graph at the device's real qubit coordinates where they are published (IBM
    heavy-hex, the data of Qiskit's gate-map plots), a force-directed layout otherwise (Braket
    lattices); the qubits the templates landed on in red."""
    g = nx.Graph()
    g.add_nodes_from(range(lay["num_qubits"]))
    g.add_edges_from(tuple(e) for e in lay["edges"])
    if lay.get("coordinates"):
        pos = {q: (c[1], -c[0]) for q, c in enumerate(lay["coordinates"])}  # (row, column) -> (x, y)
    else:
        pos = nx.kamada_kawai_layout(g) if lay["num_qubits"] <= 200 else nx.spring_layout(g, seed=0)
    used = set(lay["used"])
    nx.draw_networkx_edges(g, pos, ax=ax, edge_color="#bbb", width=0.8)
    nx.draw_networkx_nodes(g, pos, ax=ax, node_size=[40 if q in used else 12 for q in g.nodes],
                           node_color=["#d62728" if q in used else "#9aa" for q in g.nodes])
    ax.set_aspect("equal")
    ax.set_axis_off()


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    text = redact(json.dumps(report, indent=2, default=float))
    (out / "report.json").write_text(text)
    (out / "report.html").write_text(redact(render_html(report)))


THREE_DECIMALS = {"accuracy", "accuracy_stderr", "exact_accuracy", "agreement", "success_probability",
                  "success_estimate", "purity"}


def _fmt(v, key: str = "") -> str:
    if isinstance(v, float) and key in THREE_DECIMALS:
        return f"{v:.3f}"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and all(isinstance(x, int) for x in v):  # qubit lists: compact, wrappable
        return html.escape(", ".join(map(str, v)))
    return html.escape(str(v))


def column_label(key: str) -> str:
    return COLUMNS.get(key, key.replace("_", " "))


def _table(rows: list[dict], columns: list[str], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(column_label(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c, ''), c)}</td>" for c in columns) + "</tr>" for r in rows)
    return f"<table{f' class={cls}' if cls else ''}><tr>{head}</tr>{body}</table>"


def _pm(r: dict, key: str) -> str:
    se = r.get(f"{key}_stderr")
    return _fmt(r[key], "accuracy") + ("" if se is None else f" ± {se:.3f}")


def shots_series(r: dict) -> list[tuple[str, list[dict]]]:
    """(legend label, points) per backend of the shots sweep; labels are distinct from EXACT_LINE."""
    sweep = r.get("shots_sweep") or []
    return [(SHOTS_LEGEND.get(t, f"{t} (device noise + shots)"),
             sorted((s for s in sweep if s["backend"] == t), key=lambda s: s["shots"]))
            for t in dict.fromkeys(s["backend"] for s in sweep)]


def depth_rows(r: dict) -> list[dict]:
    """Accuracy by needle depth as rows; reports stored before the quartiles were explained held a
    {"q1": accuracy, ...} dict."""
    d = r.get("accuracy_by_depth")
    if isinstance(d, dict):
        return [{"quartile": k, "accuracy": v} for k, v in d.items()]
    return list(d or [])


def _figure(draw, title: str) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 3.4), dpi=100)
    draw(ax)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<figure><img class="plot" alt="{html.escape(title)}" src="data:image/png;base64,{data}"></figure>'


def pareto(points: list[dict], cost: str = "qpu_seconds_per_image") -> list[dict]:
    """The accuracy-against-cost frontier: points no other point beats on both."""
    out, best = [], -1.0
    for p in sorted(points, key=lambda p: (p[cost], -p["accuracy"])):
        if p["accuracy"] > best:
            out.append(p)
            best = p["accuracy"]
    return out


def _frontier_section(rows: list[dict], choice) -> str:
    cols = [c for c in ("target", "label", "accuracy", "accuracy_stderr", "logit_error_mean", "max_two_qubit",
                        "circuits_per_image", "shots_per_image", "qpu_seconds_per_image", "success_estimate")
            if any(c in row for row in rows)]
    html_parts = ["<h2>QLAM: accuracy against cost per target</h2>" + _table(rows, cols)]
    targets = list(dict.fromkeys(row["target"] for row in rows))

    def plot(ax):
        for i, t in enumerate(targets):
            sel = [row for row in rows if row["target"] == t]
            color = f"C{i}"
            ax.errorbar([row["qpu_seconds_per_image"] for row in sel], [row["accuracy"] for row in sel],
                        yerr=[row.get("accuracy_stderr", 0) for row in sel], fmt="o", color=color, alpha=0.5,
                        capsize=2)
            front = pareto(sel)
            ax.plot([row["qpu_seconds_per_image"] for row in front], [row["accuracy"] for row in front], "-",
                    color=color, label=f"{t} frontier")
        exact = [row["exact_accuracy"] for row in rows if "exact_accuracy" in row]
        if exact:
            ax.axhline(max(exact), color="k", ls="--", lw=0.8, label="exact")
        ax.set_xscale("log")
        ax.set_xlabel("estimated QPU seconds per image")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)

    html_parts.append(_figure(plot, "Accuracy against cost: every lever, and the frontier per target"))
    for c in [choice] if isinstance(choice, dict) else choice or []:  # the run's one choice, or one per target
        html_parts.append(f"<h3>segment = auto on {html.escape(c['target'])}: segment {c['chosen']['segment']}, "
                          f"obp_steps {c['chosen']['obp_steps']}</h3><p>{html.escape(c['why'])}</p>"
                          + _table(c["candidates"], list(c["candidates"][0].keys())))
    return "".join(html_parts)


def _provenance(p: dict, written: str | None) -> str:
    rows = [("run at", p.get("timestamp") or "not recorded by the run"), ("report written", written or ""),
            ("checkpoint SHA-256 (tensors)", p.get("checkpoint_sha256") or ""),
            ("Dask cluster", p.get("cluster") or "none (in-process)")]
    rows += [(name, v or "not installed") for name, v in (p.get("versions") or {}).items()]
    if p.get("note"):
        rows.append(("note", p["note"]))
    spec = "\n".join(f"[{k}] " + ", ".join(f"{a} = {json.dumps(b)}" for a, b in v.items()) if isinstance(v, dict)
                     else f"{k} = {json.dumps(v)}" for k, v in (p.get("spec") or {}).items())
    return ("<h2>Provenance</h2><table>" + "".join(f"<tr><th>{html.escape(a)}</th><td>{_fmt(b)}</td></tr>"
                                                  for a, b in rows)
            + f"</table><h3>Spec as run</h3><pre>{html.escape(spec)}</pre>")


def render_html(r: dict) -> str:
    parts = [f"<h1>qssm report: {html.escape(str(r.get('checkpoint', r.get('title', ''))))}</h1>"]
    summary = [(label, _pm(r, k) if f"{k}_stderr" in r else _fmt(r[k], k)) for k, label in SUMMARY_KEYS if k in r]
    if summary:
        parts.append("<h2>Run</h2><table>" + "".join(f"<tr><th>{html.escape(a)}</th><td>{b}</td></tr>"
                                                     for a, b in summary) + "</table>"
                     + "<p class=note>± s.e.: the binomial standard error of an accuracy over the examples, "
                       "sqrt(p (1 - p) / n).</p>")
    rows = [row for row in r.get("compile") or [] if "depth" in row]
    if rows:
        cols = [c for c in COMPILE_COLUMNS if any(c in row for row in rows)]
        parts.append("<h2>Transpilation per target</h2>" + _table(rows, cols, "wide")
                     + "<p class=note>physical qubits: where each logical qubit ends up on the device; P(success): "
                       "the estimated probability that no gate or readout fails, from the target's calibration; "
                       "cut overhead: the sampling overhead of cutting the template in two.</p>")
        targets = sorted({row["target"] for row in rows})

        def depth_plot(ax):
            for i, t in enumerate(targets):
                sel = [row for row in rows if row["target"] == t]
                ax.bar([j + i * 0.8 / len(targets) for j in range(len(sel))], [row["depth"] for row in sel],
                       width=0.8 / len(targets), label=t)
            names = [row["template"] for row in rows if row["target"] == targets[0]]
            ax.set_xticks(range(len(names)), names, rotation=30, fontsize=7)
            ax.set_ylabel("depth")
            ax.legend(fontsize=7)

        parts.append(_figure(depth_plot, "Transpiled depth per template and target"))
    if r.get("shots_sweep"):
        sweep = r["shots_sweep"]
        parts.append("<h2>Accuracy against shots</h2>" + _table(sweep, list(sweep[0].keys())))

        def shots_plot(ax):
            for label, sel in shots_series(r):
                ax.errorbar([s["shots"] for s in sel], [s["accuracy"] for s in sel],
                            yerr=[s.get("accuracy_stderr", 0) for s in sel], marker="o", label=label, capsize=3)
            if "exact_accuracy" in r:
                ax.axhline(r["exact_accuracy"], color="k", ls="--", label=EXACT_LINE)
            ax.set_xscale("log")
            ax.set_xlabel("shots per circuit")
            ax.set_ylabel("accuracy")
            ax.legend(fontsize=7)

        parts.append(_figure(shots_plot, "Accuracy against shots"))
    if r.get("noisy_targets"):
        noisy = r["noisy_targets"]
        parts.append("<h2>Noisy dry runs per target</h2>" + _table(noisy, list(noisy[0].keys())))

        def noisy_plot(ax):
            ax.bar([n["backend"] for n in noisy], [n["accuracy"] for n in noisy], color="#4c72b0")
            ax.errorbar([n["backend"] for n in noisy], [n["accuracy"] for n in noisy],
                        yerr=[n.get("accuracy_stderr", 0) for n in noisy], fmt="none", ecolor="k", capsize=3)
            if "exact_accuracy" in r:
                ax.axhline(r["exact_accuracy"], color="k", ls="--", label=EXACT_LINE)
                ax.legend(fontsize=7)
            ax.set_ylim(0, 1.05)
            ax.set_ylabel("accuracy")
            ax.tick_params(axis="x", labelsize=7)

        parts.append(_figure(noisy_plot, f"Accuracy per noisy target ({noisy[0]['shots']} shots)"))
    if r.get("layouts"):
        parts.append("<h2>Layout on the device graph</h2>")
        for lay in r["layouts"]:
            parts.append(_figure(lambda ax, lay=lay: _draw_layout(ax, lay), f"{lay['target']}: qubits used (red)"))
    if r.get("segment_sweep"):
        seg = r["segment_sweep"]
        parts.append("<h2>QLAM: error against segment length</h2>" + _table(seg, list(seg[0].keys())))

        def seg_plot(ax):
            for shots in sorted({s["shots"] for s in seg}):
                sel = sorted((s for s in seg if s["shots"] == shots), key=lambda s: s["segment"])
                ax.plot([s["segment"] for s in sel], [s["logit_error_mean"] for s in sel], marker="o", label=f"{shots} shots")
            ax.set_xlabel("segment length (tokens)")
            ax.set_ylabel("mean logit error")
            ax.legend(fontsize=7)

        parts.append(_figure(seg_plot, "Logit error against segment length"))
    if r.get("split_frontier"):
        parts.append(_frontier_section(r["split_frontier"], r.get("split_choice")))
    if r.get("logit_error_by_position"):
        err = r["logit_error_by_position"]

        def pos_plot(ax):
            ax.plot(range(len(err)), err, marker=".")
            ax.set_xlabel("token position")
            ax.set_ylabel("mean |logit - exact|")

        parts.append("<h2>Error against token position</h2>" + _figure(pos_plot, "Logit error against token position"))
    if r.get("accuracy_by_depth"):
        d = [row for row in depth_rows(r) if row.get("accuracy") is not None]

        def depth_acc(ax):
            ax.bar([row["quartile"] for row in d], [row["accuracy"] for row in d],
                   yerr=[row.get("accuracy_stderr") or 0 for row in d], capsize=3)
            ax.set_ylim(0, 1.05)
            ax.set_xlabel("needle position: q1 = first quarter of the sequence (furthest from the query) .. "
                          "q4 = last quarter", fontsize=7)
            ax.set_ylabel("accuracy")

        cols = [c for c in ("quartile", "needle_position", "n", "accuracy", "accuracy_stderr") if any(c in x for x in d)]
        parts.append("<h2>Accuracy by needle depth</h2><p class=note>The haystack hides a KEY-value pair at a "
                     "random position; q1..q4 are the quarters of the sequence it was hidden in, q1 the furthest "
                     "from the query at the end.</p>" + _table(d, cols) + _figure(depth_acc, "Accuracy by needle depth"))
    if r.get("shot_plan"):
        sp = r["shot_plan"]
        curve = [c for c in sp["curve"] if c["agreement_noisy"] < 1 - 1e-9] or sp["curve"][:1]
        line = f"<p>{html.escape(sp['line'])}</p>" if sp.get("line") else ""
        parts.append("<h2>Shot plan: predicted agreement against shots</h2>" + line + _table(curve, list(curve[0].keys())))

        def plan_plot(ax):
            ax.plot([c["shots_per_circuit"] for c in curve], [c["agreement_noisy"] for c in curve], marker="o",
                    label="same as infinite shots")
            ax.plot([c["shots_per_circuit"] for c in curve], [c["agreement_exact"] for c in curve], marker=".",
                    label="same as exact")
            ax.axhline(sp["confidence"], color="k", ls="--", label=f"target {sp['confidence']}")
            if sp.get("recommended_shots_per_circuit"):
                ax.axvline(sp["recommended_shots_per_circuit"], color="#d62728", ls=":", label="recommended")
            ax.set_xscale("log")
            ax.set_xlabel("shots per circuit")
            ax.set_ylabel("predicted agreement")
            ax.legend(fontsize=7)

        parts.append(_figure(plan_plot, "Predicted agreement against shots per circuit (delta method)"))
    if r.get("mitigation"):
        m = r["mitigation"] if isinstance(r["mitigation"], list) else [r["mitigation"]]
        columns = list(dict.fromkeys(k for row in m for k in row))  # every stage's columns (readout's method)
        parts.append("<h2>Mitigation and its overhead</h2>" + _table(m, columns))
    cost = [(label, r[k]) for k, label in COST_KEYS if r.get(k)]
    cost += [(f"seconds in {k.replace('_', ' ')}" + (" (all stages)" if k == "transpile" else ""), v)
             for k, v in (r.get("seconds") or {}).items()]
    if cost:
        parts.append("<h2>Cost and round trips</h2><table>" + "".join(
            f"<tr><th>{html.escape(a)}</th><td>{_fmt(b)}</td></tr>" for a, b in cost) + "</table>")
    if r.get("estimate"):
        est = r["estimate"]
        parts.append("<h3>Preflight estimate</h3><table>" + "".join(
            f"<tr><th>{html.escape(column_label(str(k)))}</th><td>{_fmt(v)}</td></tr>" for k, v in est.items()) + "</table>")
    if r.get("provenance"):
        parts.append(_provenance(r["provenance"], r.get("report_written")))
    style = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;color:#222}"
             "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.25rem .5rem;"
             "text-align:left;font-size:.9rem;vertical-align:top}img.plot{max-width:100%}"
             "table.wide{width:100%}table.wide td,table.wide th{font-size:.75rem;"
             "overflow-wrap:break-word;padding:.15rem .3rem}p.note{font-size:.8rem;color:#555}"
             "pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:.75rem;background:#f6f6f6;padding:.5rem}")
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>qssm report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
