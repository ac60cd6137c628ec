"""IBM device snapshots shipped with qiskit-ibm-runtime (fake backends): targets, noise, limits."""

from __future__ import annotations

from functools import lru_cache

from qssm.errors import QssmError


def fake_names() -> list[str]:
    import qiskit_ibm_runtime.fake_provider as fp

    names = []
    for attr in dir(fp):
        if attr.startswith("Fake") and "Provider" not in attr and "Fractional" not in attr:
            names.append("fake_" + attr[4:].removesuffix("V2").lower())
    return sorted(names)


@lru_cache(maxsize=None)
def fake_backend(name: str):
    """"fake_fez" -> FakeFez(); one instance per process (their targets are large)."""
    import qiskit_ibm_runtime.fake_provider as fp

    stem = name.removeprefix("fake_")
    for attr in dir(fp):
        if attr.startswith("Fake") and attr[4:].removesuffix("V2").lower() == stem:
            return getattr(fp, attr)()
    raise QssmError(f"unknown IBM device snapshot {name!r}; try one of fake_fez, fake_torino, fake_kingston, fake_sherbrooke")


def calibration(backend) -> str:
    try:
        return str(backend.properties().last_update_date)
    except Exception:  # noqa: BLE001 - snapshots without properties have no calibration date
        return ""


def max_shots(backend) -> int | None:
    try:
        return int(backend.configuration().max_shots)
    except Exception:  # noqa: BLE001
        return None
