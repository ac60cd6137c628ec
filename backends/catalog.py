"""Every target qssm can run on, as plain rows for `qssm devices`: the local simulators, the IBM
device snapshots shipped with qiskit-ibm-runtime (read from their JSON files, without building a
backend), and the Braket snapshots in backends/device_data/."""

from __future__ import annotations

import json
from pathlib import Path

from qssm.backends import devices
from qssm.backends.ibm import USD_PER_QPU_SECOND

FREE = "free (runs here)"

LOCAL = [
    {"names": ["exact"], "kind": "simulator", "qubits": None, "native_gates": "any (torch statevector)",
     "snapshot": None, "price": FREE, "price_source": "free"},
    {"names": ["aer"], "kind": "simulator", "qubits": None, "native_gates": "any (Aer, ideal)", "snapshot": None,
     "price": FREE, "price_source": "free"},
    {"names": ["braket:local", "braket:local_dm"], "kind": "simulator", "qubits": None,
     "native_gates": "Braket OpenQASM gates", "snapshot": None, "price": FREE, "price_source": "free"},
]


def ibm_snapshots() -> list[dict]:
    import qiskit_ibm_runtime.fake_provider as fp

    rows = []
    for attr in sorted(dir(fp)):
        cls = getattr(fp, attr)
        if not (attr.startswith("Fake") and hasattr(cls, "conf_filename") and "Fractional" not in attr):
            continue
        folder = Path(cls.dirname)
        conf = json.loads((folder / cls.conf_filename).read_text())
        props = folder / (getattr(cls, "props_filename", "") or "-")
        date = json.loads(props.read_text()).get("last_update_date") if props.is_file() else None
        stem = attr[4:].removesuffix("V2").lower()
        rows.append({"names": [f"ibm:fake_{stem}", f"aer:fake_{stem}", f"dm:fake_{stem}"], "kind": "IBM snapshot",
                     "qubits": conf["n_qubits"], "native_gates": ", ".join(conf.get("basis_gates", [])),
                     "snapshot": date, "qpu": f"ibm:{conf.get('backend_name', 'ibm_' + stem)}",
                     "price_source": "IBM list price",
                     "price": f"{FREE}; the QPU: IBM's pay-as-you-go list price, {USD_PER_QPU_SECOND * 60:g} USD "
                              f"per QPU minute (backends/ibm.py)"})
    return rows


def braket_snapshots() -> list[dict]:
    rows = []
    for name in devices.device_names():
        doc = devices.load_device(name)
        p = doc.get("pricing", {})
        rows.append({"names": [f"braket:{name}", f"dm:{name}"], "kind": f"Braket snapshot ({doc['providerName']})",
                     "qubits": doc["deviceCapabilities"]["paradigm"]["qubitCount"],
                     "native_gates": ", ".join(devices.native_names(name)), "snapshot": doc["snapshot"]["date"],
                     "qpu": doc["deviceArn"], "price_source": "snapshot",
                     "price": f"{FREE} as dm:; the QPU: {p.get('per_task_usd', 0):g} USD per task + "
                              f"{p.get('per_shot_usd', 0):g} USD per shot (backends/device_data/{name}.json)"})
    return rows


def catalog() -> list[dict]:
    return LOCAL + ibm_snapshots() + braket_snapshots()
