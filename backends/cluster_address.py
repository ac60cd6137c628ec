"""Cluster addresses (`[backend] cluster`, `--cluster`), checked when the spec or the command line
is parsed: a bad one is one line naming the fix, before any cluster is started or reached.

    local:N              a LocalCluster of N single-threaded worker processes, 1 <= N <= max_local_workers()
    tcp://host:port      an existing Dask scheduler (host: a DNS name, IPv4, or [IPv6])
    tls://host:port      the same over TLS, with the certificates of Dask's configuration
                         (distributed.comm.tls.*)
    ws://, wss://        Dask's websocket comms
    ucx://host:port      only where ucx-py is installed (Dask's UCX comm needs it)
    host:port            read as tcp://host:port

Refused: `inproc://` (a scheduler inside this very process, which qssm never starts), any other
scheme, a missing or non-numeric port, a path, user or query part, and a non-ASCII host (give its
IDNA form, xn--...).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re

from qssm.errors import QssmError

REMOTE_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")
LOCAL_WORKERS_PER_CORE = 4  # more single-threaded workers than this per core only adds overhead
FORMS = 'use "local:N" (N worker processes) or a scheduler address such as "tcp://host:8786"'
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def max_local_workers() -> int:
    return LOCAL_WORKERS_PER_CORE * (os.cpu_count() or 1)


def _bad(text: str, why: str) -> QssmError:
    return QssmError(f"cluster address {text!r:.80} {why}; {FORMS}")


def _local(text: str, count: str) -> str:
    cap = max_local_workers()
    if not count.isascii() or not count.isdigit():
        raise _bad(text, f"has worker count {count!r:.20}; local:N takes an integer N in 1..{cap}")
    n = int(count)
    if not 1 <= n <= cap:
        raise _bad(text, f"asks for {n} workers; local:N takes 1..{cap} on this machine "
                         f"({LOCAL_WORKERS_PER_CORE} per CPU core)")
    return f"local:{n}"


def _host(text: str, host: str) -> str:
    if not host:
        raise _bad(text, "has no host")
    if not host.isascii():
        raise _bad(text, "has a non-ASCII host (give its IDNA form, xn--...)")
    if host.startswith("["):
        if not host.endswith("]"):
            raise _bad(text, "has an unclosed IPv6 bracket")
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise _bad(text, "has an invalid IPv6 address") from None
        return host
    if not all(_LABEL.fullmatch(label) for label in host.rstrip(".").split(".")):
        raise _bad(text, "has an invalid host name")
    return host


def parse_cluster(text: str) -> str:
    """The address, normalized ("" = no cluster), or a one-line QssmError."""
    if text == "":
        return ""
    if text != text.strip() or any(not c.isprintable() for c in text):
        raise _bad(text, "has spaces or control characters")
    scheme, sep, rest = text.partition("://")
    if not sep:
        kind, colon, count = text.partition(":")
        if kind == "local":
            return _local(text, count)  # "local" alone: an empty count, refused there
        if not colon:
            raise _bad(text, "is neither local:N nor a host:port")
        scheme, rest = "tcp", text
    scheme = scheme.lower()
    if scheme == "inproc":
        raise _bad(text, "names an in-process scheduler, which qssm never starts")
    if scheme not in REMOTE_SCHEMES:
        raise _bad(text, f"has scheme {scheme}://, which Dask does not serve (use one of "
                         f"{', '.join(s + '://' for s in REMOTE_SCHEMES)})")
    if scheme == "ucx" and importlib.util.find_spec("ucp") is None:
        raise _bad(text, "needs ucx-py for Dask's UCX comm, and it is not installed")
    if not rest:
        raise _bad(text, "has no host and port")
    if rest.startswith("[") and "]" not in rest:
        raise _bad(text, "has an unclosed IPv6 bracket")
    if any(c in rest for c in "/?#@"):
        raise _bad(text, "has a path, query or user part; a scheduler address is scheme://host:port")
    host, colon, port = rest.rpartition(":")
    if not colon or (host.startswith("[") and not host.endswith("]")) or (not host.startswith("[") and ":" in host):
        raise _bad(text, "has no port (a Dask scheduler listens on one, 8786 by default)")
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise _bad(text, f"has port {port!r:.20}; give a port 1..65535")
    return f"{scheme}://{_host(text, host)}:{int(port)}"
