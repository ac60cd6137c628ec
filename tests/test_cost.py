"""What a job costs: the preflight prices exactly what dispatch sends, `qssm estimate` prices without
credentials and records nothing, and every command shows the price per example."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from qssm.app.durable import create_job, run_job  # noqa: E402
from qssm.jobs.spec import parse_spec  # noqa: E402
from qssm.jobs.store import JobStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CK = ROOT / "checkpoints"


def spec(checkpoint: str, backend="dm:fake_fez", shots=100, n=1, **extra):
    raw = {"model": {"checkpoint": str(CK / checkpoint)}, "data": {"n": n},
           "backend": {"name": backend, "shots": shots, "seed_simulator": 1}}
    raw.update(extra)
    return parse_spec(raw, "test")


@pytest.mark.parametrize("checkpoint,extra,readout", [
    ("qmamba-haystack.safetensors", {}, True),  # token-table round trip, then a layer on the same qubits
    ("qlam-digits-chain.safetensors", {"split": {"segment": 4}}, True),  # hand-off round trips
    ("qmamba-haystack.safetensors", {"backend": "aer:fake_fez"}, "mthree"),  # mthree's correction, same calibrations
])
def test_readout_mitigated_preflight_prices_what_dispatch_sends(tmp_path, checkpoint, extra, readout):
    """Readout calibrations are planned once per qubit per run: the priced transform (no results
    ever come back) must plan them as the dispatched run does (it once priced one extra batch per
    later round trip)."""
    s = spec(checkpoint, mitigation={"readout": readout}, **extra)
    store = JobStore(tmp_path / "s.sqlite")
    job_id, est = create_job(store, s)
    report = run_job(store, job_id)
    assert report["calibration_circuits"] > 0
    assert (est["batches"], est["executions"], est["shots"]) == (
        report["dispatched_batches"], report["executions"], report["total_shots"])
    assert est["batches"] == report["store_batches"]
    assert [r.get("method") for r in report["mitigation"] if r["setting"] == "readout"] == [
        "mthree" if readout == "mthree" else None]


# --- qssm estimate: no credentials, nothing recorded ----------------------------------------------
EXAMPLES = sorted((ROOT / "examples").glob("*.toml"))


@pytest.fixture
def no_credentials(tmp_path, monkeypatch):
    """No IBM token or saved account, no AWS keys or profile files; the store env points at a file."""
    import os

    for var in list(os.environ):
        if var.startswith(("AWS_", "QISKIT_IBM_", "IBM_QUANTUM_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(ROOT)
    store = tmp_path / "jobs.sqlite"
    JobStore(store).close()
    monkeypatch.setenv("QSSM_STORE", str(store))
    return store


def estimate_json(capsys, *argv) -> dict:
    import json

    from qssm.cli import main

    code = main(["estimate", *argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("example", ["braket-garnet.toml", "ibm-kingston.toml"])
def test_estimate_prices_real_devices_without_credentials_and_records_nothing(no_credentials, capsys, example):
    before = no_credentials.read_bytes()
    est = estimate_json(capsys, f"examples/{example}")
    assert no_credentials.read_bytes() == before
    assert est["usd"] > 0 and est["examples"] > 0 and est["shots"] > 0 and est["tasks"] >= 1
    for k in ("usd", "qpu_seconds", "shots", "tasks"):
        assert est[f"{k}_per_example"] == pytest.approx(est[k] / est["examples"])
    assert est["price"]["source"].startswith("https://") and est["price"]["date"]
    assert (est["price_source"], est["price_date"]) == (est["price"]["source"], est["price"]["date"])
    # the refusal is still there for spending: submit checks credentials before pricing
    from qssm.cli import main

    assert main(["submit", f"examples/{example}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "credentials" in err
    assert no_credentials.read_bytes() == before


@pytest.mark.parametrize("example", [e.name for e in EXAMPLES if "[budget]" in e.read_text()])
def test_shipped_examples_fit_their_own_budget(no_credentials, capsys, example):
    import tomllib

    budget = tomllib.loads((ROOT / "examples" / example).read_text())["budget"]
    est = estimate_json(capsys, f"examples/{example}")
    assert est["within_budget"]
    assert est["usd"] <= budget.get("max_cost_usd", float("inf"))
    assert est["qpu_seconds"] <= budget.get("max_qpu_seconds", float("inf"))


@pytest.mark.parametrize("argv,needle", [
    (["--shots", "-5"], "--shots"), (["--shots", "many"], "--shots"), (["--n", "0"], "--n"),
    (["--n", "ten"], "--n"), (["--backend", "nowhere"], "unknown backend"),
    (["--backend", "ibm:ibm_nowhere"], "no snapshot"), (["--backend", "braket:ionq_forte", "--shots", "8000"], "exceed"),
])
def test_estimate_bad_input_is_one_line(no_credentials, capsys, argv, needle):
    from qssm.cli import main

    assert main(["estimate", "examples/braket-garnet.toml", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err


def test_estimate_is_what_submit_prices(tmp_path, capsys, monkeypatch):
    """The same spec priced by `qssm estimate` (no credentials) and by submit's preflight on the
    Braket QPU path (a fake network session): the same batches, shots, tasks and dollars."""
    from fake_aws import FakeAwsSession

    from qssm.backends.braket import BraketBackend
    from qssm.commands.estimate import price

    s = spec("qlam-digits-chain.safetensors", backend="braket:iqm_garnet", shots=200, n=2,
             budget={"max_cost_usd": 0.01})
    est = price(s)
    store = JobStore(tmp_path / "s.sqlite")
    backend = BraketBackend("braket:iqm_garnet", aws_session=FakeAwsSession(tmp_path, "eu-north-1"))
    from qssm.errors import QssmError

    with pytest.raises(QssmError, match=f"estimated \\${est['usd']:.2f} exceeds budget"):
        create_job(store, s, backend=backend)  # refused without --yes: nothing recorded
    assert store.jobs() == []
    _, submitted = create_job(store, s, yes=True, backend=backend)
    for k in ("usd", "qpu_seconds", "tasks", "shots", "batches", "executions", "examples", "usd_per_example",
              "tasks_per_example", "shots_per_example"):
        assert submitted[k] == est[k], k
    assert not est["within_budget"] and est["tasks_per_example"] <= 8 / 2  # 8 batches, each one program set


def test_dry_run_prices_itself_on_the_device_whose_noise_it_ran(no_credentials, capsys):
    """`qssm run` on dm:iqm_garnet prints what the run would have cost on Garnet: the dispatched
    batches at Garnet's price, the same as `qssm estimate` of the real-device spec."""
    import json

    from qssm.cli import main

    est = estimate_json(capsys, "examples/braket-garnet.toml", "--n", "2", "--shots", "100")
    assert main(["run", "examples/braket-garnet.toml", "--backend", "dm:iqm_garnet", "--n", "2", "--shots", "100",
                 "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n_examples"] == r["on_device"]["examples"] == est["examples"] == 2
    assert r["on_device"]["device"] == "braket:iqm_garnet"
    for k in ("usd", "shots", "tasks"):
        assert r[f"{k}_per_example"] == pytest.approx(est[f"{k}_per_example"]), k
    assert r["shots_per_example"] == r["total_shots"] / 2 > 0
    assert main(["run", "examples/braket-garnet.toml", "--backend", "dm:iqm_garnet", "--n", "2", "--shots", "100"]) == 0
    out = capsys.readouterr().out
    assert f"${est['usd_per_example']:,.2f} per example on braket:iqm_garnet" in out


def test_compile_shows_cost_per_example_for_every_target(no_credentials, capsys):
    """Every target of `qssm compile` gets the estimate's per-example price (real IBM devices on
    their snapshot, without credentials; a simulator at its device's price; exact: free)."""
    import json

    from qssm.cli import main

    targets = ["braket:iqm_garnet", "dm:iqm_garnet", "ibm:ibm_kingston", "exact"]
    assert main(["compile", "examples/braket-garnet.toml", "--targets", ",".join(targets), "--no-cuts", "--json"]) == 0
    costs = {c["target"]: c for c in json.loads(capsys.readouterr().out)["cost_per_example"]}
    est = estimate_json(capsys, "examples/braket-garnet.toml")
    assert costs["braket:iqm_garnet"]["usd_per_example"] == pytest.approx(est["usd_per_example"])
    assert costs["dm:iqm_garnet"]["device"] == "braket:iqm_garnet"
    assert costs["dm:iqm_garnet"]["usd_per_example"] == pytest.approx(est["usd_per_example"])
    assert costs["ibm:ibm_kingston"]["qpu_seconds_per_example"] > 0 and costs["exact"]["device"] is None
    assert costs["exact"]["usd_per_example"] == 0
    for c in costs.values():
        assert c["shots_per_example"] == est["shots_per_example"]


# --- eval and generate on a paid backend: the same preflight -------------------------------------
@pytest.fixture
def fake_garnet(tmp_path, monkeypatch):
    """braket:iqm_garnet behind fake_aws's task transport, with (fake) credentials in the env."""
    from fake_aws import FakeAwsSession

    import qssm.backends.registry as registry
    from qssm.backends.braket import BraketBackend

    import qssm.commands.eval as eval_command
    import qssm.commands.generate as generate_command

    session = FakeAwsSession(tmp_path, "eu-north-1")
    real = registry.get_backend

    def get_backend(name, seed=None):
        return BraketBackend(name, seed=seed, aws_session=session) if name == "braket:iqm_garnet" else real(name, seed=seed)

    for module in (registry, eval_command, generate_command):  # the commands import it by name
        monkeypatch.setattr(module, "get_backend", get_backend)
    return session


def test_eval_on_a_paid_backend_is_priced_and_needs_yes(fake_garnet, capsys):
    import json

    from qssm.cli import main

    argv = ["eval", str(CK / "qlam-digits-chain.safetensors"), "--backend", "braket:iqm_garnet", "--shots", "50",
            "--n", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--yes" in err and "2 examples" in err, err
    assert fake_garnet.created == []  # nothing submitted
    assert main(argv + ["--yes", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # the fake runs tasks on Braket's noiseless local simulator, seeded by content: the 50-shot
    # decisions are those of the exact forward on the same two examples
    assert main(argv[:2] + ["--n", "2", "--json"]) == 0
    exact = json.loads(capsys.readouterr().out)
    assert out["n_examples"] == 2 and out["accuracy"] == exact["accuracy"] > 0
    usd = float(err.split("$")[1].split()[0].replace(",", ""))
    from qssm.backends import devices

    price = devices.price("iqm_garnet")
    paid = sum(price["per_task_usd"] + t["shots"] * price["per_shot_usd"] for t in fake_garnet.created)
    assert usd == pytest.approx(paid, abs=0.005)  # the price quoted is what the tasks cost


def test_generate_on_a_paid_backend_needs_yes(fake_garnet, capsys):
    from qssm.cli import main

    argv = ["generate", str(CK / "qmamba-pattern.safetensors"), "--prompt", "1,2,3", "-n", "2", "--backend",
            "braket:iqm_garnet", "--shots", "20"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--yes" in err and "$" in err, err
    assert fake_garnet.created == []
    assert main(argv + ["--yes"]) == 0 and fake_garnet.created
