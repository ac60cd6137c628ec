"""Keep credentials out of the job store, log lines and reports.

Credentials are read by the SDKs from the environment or their own saved accounts; qssm never
stores them. As a second line of defence everything qssm writes passes through `redact`, which
replaces the values of credential variables present in the environment and anything shaped like
an IBM API key or AWS secret.
"""

from __future__ import annotations

import os
import re

SECRET_NAMES = re.compile(r"(TOKEN|SECRET|PASSWORD|API_KEY|APIKEY|SESSION|CREDENTIAL)", re.I)
CREDENTIAL_VARS = ("QISKIT_IBM_TOKEN", "IBM_QUANTUM_TOKEN", "QISKIT_IBM_API_KEY", "AWS_SECRET_ACCESS_KEY",
                   "AWS_SESSION_TOKEN", "AWS_ACCESS_KEY_ID")
# shapes: AWS access key ids, and long opaque tokens following a credential-looking key
PATTERNS = [
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    re.compile(r"(?i)((?:token|secret|api_?key|password)[\"']?\s*[:=]\s*[\"']?)([A-Za-z0-9_\-+/=.]{12,})"),
]
MASK = "***"


def secret_values() -> list[str]:
    """Values of credential environment variables (long enough not to mask ordinary words)."""
    out = []
    for name, value in os.environ.items():
        if (name in CREDENTIAL_VARS or SECRET_NAMES.search(name)) and len(value) >= 8:
            out.append(value)
    return sorted(set(out), key=len, reverse=True)


def redact(text: str) -> str:
    for value in secret_values():
        text = text.replace(value, MASK)
    text = PATTERNS[0].sub(MASK, text)
    return PATTERNS[1].sub(lambda m: m.group(1) + MASK, text)
