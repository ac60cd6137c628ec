"""Retries for provider calls: exponential backoff with full jitter for transient faults
(timeouts, throttling, 5xx); permanent faults surface at once with the provider's message."""

from __future__ import annotations

import functools
import http.client
import importlib
import random
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import tenacity

T = TypeVar("T")

TRANSIENT_CODES = {"Throttling", "ThrottlingException", "TooManyRequestsException", "RequestTimeout",
                   "RequestTimeoutException", "ServiceUnavailable", "ServiceUnavailableException",
                   "InternalServerError", "InternalServerException", "InternalFailure", "SlowDown"}
TRANSIENT_WORDS = ("timed out", "timeout", "throttl", "rate limit", "too many requests", "temporarily unavailable",
                   "service unavailable", "bad gateway", "gateway timeout", "connection reset", "connection aborted")


class TransientError(Exception):
    """A fault worth retrying (raised by fakes and wrappers; providers raise their own types)."""


class PermanentError(Exception):
    """A fault that retrying cannot fix; the job fails with this message."""


def status_code(exc: BaseException) -> int | None:
    for attr in ("status_code", "status", "code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int):
            return value
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return getattr(response, "status_code", None)


@functools.lru_cache(maxsize=1)
def network_errors() -> tuple[type, ...]:
    """Exception classes of a dropped or refused connection, a DNS failure or a timeout, from the
    standard library and the HTTP stacks under the IBM and AWS SDKs. Most of them are not
    subclasses of the builtin ConnectionError / TimeoutError (requests' and botocore's own
    hierarchies, socket.gaierror is a bare OSError), so they are listed here."""
    found: list[type] = [TransientError, TimeoutError, ConnectionError, socket.gaierror, http.client.IncompleteRead]
    for module, names in (
        # botocore's ConnectionError covers EndpointConnectionError and ConnectTimeoutError
        ("botocore.exceptions", ("ConnectionError", "ReadTimeoutError", "ConnectionClosedError")),
        ("requests.exceptions", ("ConnectionError", "Timeout", "ChunkedEncodingError")),
        ("urllib3.exceptions", ("ProtocolError", "TimeoutError", "NewConnectionError", "MaxRetryError")),
    ):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        found += [getattr(mod, n) for n in names if hasattr(mod, n)]
    return tuple(found)


def _chain(exc: BaseException):
    """The exception and what caused it: SDKs wrap network errors in their own types."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, PermanentError):
        return False
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in _chain(exc)):
        return False  # a certificate problem does not go away by retrying (it travels as a ConnectionError)
    if any(isinstance(e, network_errors()) for e in _chain(exc)):
        return True
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and response.get("Error", {}).get("Code") in TRANSIENT_CODES:
        return True
    code = status_code(exc)
    if code is not None and (code == 429 or 500 <= code < 600):
        return True
    text = str(exc).lower()
    return any(w in text for w in TRANSIENT_WORDS)


@dataclass
class RetryPolicy:
    attempts: int = 8
    base_seconds: float = 0.5
    cap_seconds: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random | None = None

    def delay(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(cap, base * 2^attempt)] (AWS architecture blog)."""
        rng = self.rng or random
        return rng.uniform(0, min(self.cap_seconds, self.base_seconds * 2**attempt))


def call_with_retries(fn: Callable[[], T], policy: RetryPolicy | None = None,
                      on_retry: Callable[[int, BaseException], None] | None = None) -> T:
    """fn() until it returns, a permanent fault, or policy.attempts transient faults (the last one
    is raised as it is). tenacity runs the loop; the policy supplies the delays and the sleep."""
    policy = policy or RetryPolicy()

    def before_sleep(state: tenacity.RetryCallState) -> None:
        if on_retry is not None:
            on_retry(state.attempt_number, state.outcome.exception())

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=lambda state: policy.delay(state.attempt_number - 1),
        retry=tenacity.retry_if_exception(lambda e: isinstance(e, Exception) and is_transient(e)),
        sleep=policy.sleep, before_sleep=before_sleep, reraise=True)
    return retrying(fn)
