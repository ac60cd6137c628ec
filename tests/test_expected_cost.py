"""An adaptive job's expected cost (qssm/app/expected.py): derived from its adaptive rounds on its
noise twin, beside the cap the preflight prices; reproducible with a seed; shown by estimate, submit
and run; the budget holds the larger of the two."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_cost import estimate_json, no_credentials  # noqa: E402,F401

from qssm.app.preflight import check_budget  # noqa: E402
from qssm.cli import main  # noqa: E402
from qssm.errors import QssmError  # noqa: E402
from qssm.jobs.spec import load_spec  # noqa: E402
from qssm.pipeline.adaptive import MIN_PILOT  # noqa: E402

GARNET = "examples/braket-garnet.toml"


def test_estimate_of_an_adaptive_job_shows_cap_and_expected_cost_without_credentials(no_credentials, capsys):
    before = no_credentials.read_bytes()
    est = estimate_json(capsys, GARNET, "--shots", "auto")
    assert no_credentials.read_bytes() == before  # nothing recorded
    x = est["expected"]
    assert x["available"] and x["twin"] == "dm:iqm_garnet" and x["device"] == "braket:iqm_garnet"
    assert x["sample"] == est["examples"] == 4 and "dm:iqm_garnet" in x["derivation"]
    # every circuit gets at least MIN_PILOT shots in the pilot round; the cap is what the budget holds
    pilot = estimate_json(capsys, GARNET, "--shots", str(MIN_PILOT))
    assert pilot["usd"] < est["expected_usd"] < est["usd"]
    assert pilot["shots_per_example"] <= est["expected_shots_per_example"] <= est["shots_per_example"]
    assert est["expected_usd_per_example"] == pytest.approx(est["expected_usd"] / est["examples"])
    assert est["expected_shots_per_example_stderr"] > 0 and est["expected_usd_stderr"] > 0
    assert main(["estimate", GARNET, "--shots", "auto"]) == 0
    out = capsys.readouterr().out
    assert "the table prices the cap" in out and f"expected: ${x['usd_per_example']:,.2f} ±" in out


def test_expected_cost_is_the_dry_run_when_the_sample_is_the_whole_job(no_credentials, capsys):
    """n <= the sample: the estimate simulates exactly the run `qssm run` makes on the twin, seed for
    seed, so its expected price is that run's measured price on the device."""
    est = estimate_json(capsys, GARNET, "--shots", "auto", "--n", "3")
    assert main(["run", GARNET, "--backend", "dm:iqm_garnet", "--shots", "auto", "--n", "3", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert est["expected"]["sample"] == r["n_examples"] == 3
    for k in ("usd", "tasks", "shots"):
        assert est["expected"][k] == pytest.approx(r["on_device"][k]), k
    assert est["expected_shots_per_example"] == pytest.approx(r["shots_per_example_mean"])
    # the dry run of an adaptive job shows the cap the preflight would price
    assert r["adaptive_cap"]["usd_per_example"] == pytest.approx(est["usd_per_example"])
    assert r["adaptive_cap"]["device"] == "braket:iqm_garnet"


def test_expected_cost_is_reproducible_with_a_seed(no_credentials, capsys, tmp_path):
    spec = Path(GARNET).read_text().replace("n = 4", "n = 24").replace('shots = 250', 'shots = "auto"')
    runs = {}
    for seed in (1, 1, 2):
        f = tmp_path / f"s{seed}.toml"
        f.write_text(spec.replace("[backend]", f"[backend]\nseed_simulator = {seed}").replace(
            'checkpoint = "checkpoints/', f'checkpoint = "{Path.cwd()}/checkpoints/'))
        runs.setdefault(seed, []).append(estimate_json(capsys, str(f))["expected"])
    a, b = runs[1]
    assert a == b  # the same seed: the same sample, the same rounds, the same price
    assert a["sample"] == 16 and a["examples"] == 24
    assert a["sample_examples"] != runs[2][0]["sample_examples"]


def test_kingston_adaptive_expected_cost_counts_every_rounds_jobs(no_credentials, capsys):
    """IBM: 2 s of QPU time per runtime job, a job per round trip and shot count (a pack); the cap
    prices one round trip at one shot count, the rounds send several, so the expected QPU time is
    the larger though its shots are fewer, and the budget holds it."""
    est = estimate_json(capsys, "examples/ibm-kingston.toml", "--shots", "auto")
    assert est["tasks"] == est["round_trips"] == 1
    assert est["expected"]["tasks"] > est["tasks"] and est["expected_qpu_seconds"] > est["qpu_seconds"]
    assert est["expected_shots_per_example"] < est["shots_per_example"]
    assert est["within_budget"] == (est["expected_qpu_seconds"] <= 60 and est["expected_usd"] <= 100)


def test_budget_holds_the_expected_cost_when_the_rounds_cost_more_than_the_cap(no_credentials):
    """The cap prices one round's tasks/jobs; the rounds send more (IBM: 2 s of QPU time per job)."""
    spec = load_spec(GARNET)
    est = {"usd": 10.0, "qpu_seconds": 1.0, "expected_usd": 30.0, "expected_qpu_seconds": 1.0}
    with pytest.raises(QssmError, match=r"estimated \$30.00 exceeds budget.max_cost_usd = 20"):
        check_budget(type(spec)(**{**spec.__dict__, "budget": type(spec.budget)(max_cost_usd=20.0)}), est)
    check_budget(type(spec)(**{**spec.__dict__, "budget": type(spec.budget)(max_cost_usd=40.0)}), est)


def test_run_plan_prints_the_recommendation_priced_beside_the_run(no_credentials, capsys, tmp_path):
    """`qssm run --plan`: one line with the plan's shots and the price per example at both shot
    counts (the same prices `qssm estimate` gives), in --json and the report too."""
    argv = ["run", GARNET, "--backend", "dm:fake_fez", "--n", "4", "--shots", "4000", "--plan"]
    assert main([*argv, "--json", "--out", str(tmp_path / "out")]) == 0
    r = json.loads(capsys.readouterr().out)
    rec = r["shot_plan"]["recommendation"]
    assert rec["ran_shots_per_circuit"] == 4000 and 0 < rec["shots_per_circuit"] < 4000
    assert rec["agreement"] >= rec["confidence"] == 0.99
    ran = estimate_json(capsys, GARNET, "--backend", "dm:fake_fez", "--n", "4", "--shots", "4000")["on_device"]
    planned = estimate_json(capsys, GARNET, "--backend", "dm:fake_fez", "--n", "4", "--shots",
                            str(rec["shots_per_circuit"]))["on_device"]
    assert rec["ran"]["usd_per_example"] == pytest.approx(ran["usd_per_example"]) == pytest.approx(r["usd_per_example"])
    assert rec["plan"]["usd_per_example"] == pytest.approx(planned["usd_per_example"])
    assert planned["usd_per_example"] < ran["usd_per_example"]
    line = r["shot_plan"]["line"]
    assert line.startswith(f"plan: {rec['shots_per_circuit']:,} shots per circuit reach agreement 0.99 (you ran 4,000: ")
    assert "plan" in (tmp_path / "out" / "report.html").read_text() and line.split(" (")[0] in (
        tmp_path / "out" / "report.html").read_text()
    assert main(argv) == 0
    assert line in capsys.readouterr().out


@pytest.mark.parametrize("extra,needle", [
    (["--backend", "aer", "--shots", "100"], "--plan needs device noise and aer has none"),
    (["--backend", "dm:iqm_garnet", "--shots", "auto"], "--plan plans fixed shots per circuit"),
    (["--backend", "exact", "--shots", "0"], "--plan plans fixed shots per circuit"),
])
def test_run_plan_without_a_plan_to_make_is_one_line_before_the_run(no_credentials, capsys, tmp_path, extra, needle):
    assert main(["run", GARNET, "--n", "1", "--plan", *extra, "--out", str(tmp_path / "out")]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and needle in err and not out
    assert not (tmp_path / "out").exists()


def test_estimate_says_when_per_job_overhead_makes_adaptive_dearer(no_credentials, capsys):
    """On IBM every runtime job pays a fixed overhead and adaptive rounds send several: when the
    expected cost exceeds the cap's price the estimate says why and points at the fixed-shot plan."""
    assert main(["estimate", "examples/ibm-kingston.toml", "--shots", "auto", "--n", "2"]) == 0
    out = capsys.readouterr().out
    assert "the expected cost exceeds the cap's price" in out and "`qssm plan SPEC`" in out
