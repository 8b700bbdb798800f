"""Joining a Ray cluster: the address forms, the auth token, and a bounded first contact.

Addresses (``--address``, ``[execution] address``):

``HOST:PORT``
    the cluster's GCS (``ray start --head --port=PORT``): a driver on a node of the cluster,
    or on a machine that reaches every node.
``ray://HOST:PORT``
    Ray Client (``ray start --head --ray-client-server-port=PORT``): a driver outside the cluster.
``auto``
    the cluster this machine's ``ray start`` joined.

Token authentication (on by default in Ray >= 2.52 once a token exists): the token comes
from Ray's own variables -- ``RAY_AUTH_TOKEN`` (the token), ``RAY_AUTH_TOKEN_PATH`` (a file
holding it), else ``~/.ray/auth_token`` -- or from ``[execution] token_file`` (a file; the
config stores its path, never the token). Ray switches token mode on by itself only for
``auto``; for an explicit address, repalign sets ``RAY_AUTH_MODE=token`` whenever a token is
available and the variable is unset (a cluster without authentication ignores the token).
The token is never printed or written to the study.

Ray's own first contact waits 20 s (GCS) or 30 s (Ray Client) per attempt and reports a
wrong token as a generic ``ConnectionError``. So before joining, a child process makes the
contact (:func:`probe_cluster`) and is stopped after ``connect_timeout`` seconds; what it
printed says why it failed. An unreachable address, a refused token or a Ray/Python version
mismatch is an :class:`~repalign.errors.InputError` (one line, exit code 2) within that time.

Ray Client starts a server process on the head node for each driver. On a loaded head node
that process sometimes dies as it starts (Ray forks it from a multithreaded proxy); the probe
then asks again while its timeout lasts, and the run's own join asks up to
``CLIENT_SERVER_ATTEMPTS`` times.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from repalign.errors import InputError

log = logging.getLogger(__name__)

#: an address that starts a private cluster for the run instead of joining one
LOCAL_ADDRESSES = ("", "local")
#: what Ray prints when the cluster refuses the token (GCS; Ray Client; no token at all)
_AUTH_REFUSED = re.compile(
    r"InvalidAuthToken|Invalid or missing authentication token|Unauthenticated|no authentication token was found"
)
#: what Ray Client reports when the server process the cluster starts for this driver died as
#: it started. Ray forks it from its multithreaded proxy, and on a loaded head node the first
#: ones sometimes die before running a line (their logs stay empty); the next one works.
_CLIENT_SERVER_DIED = re.compile(
    r"Starting Ray client server failed|in start_specific_server|Proxy failed to Connect to backend"
)
#: seconds between asking for a driver's Ray Client server again
CLIENT_SERVER_RETRY_PAUSE_S = 1.0
#: how often a run's own join asks (the check before it asks while its timeout lasts)
CLIENT_SERVER_ATTEMPTS = 5

# The child's program: join, say what it joined, leave. It imports only Ray; ray's client
# logger is turned up so a refused token shows within a second instead of after retries.
# When the Ray Client server refuses the join, Ray spends another 30 s closing its channel
# before ray.init raises; the child says why as soon as Ray knows (through Ray Client's
# private Worker._server_init where it exists; elsewhere it only takes longer).
_PROBE = r"""
import json, logging, os, sys
import ray

def fail(exc):
    print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}), flush=True)
    os._exit(0)

try:
    from ray.util.client.worker import Worker
    server_init = Worker._server_init
    def reporting_server_init(self, *args, **kwargs):
        try:
            return server_init(self, *args, **kwargs)
        except BaseException as exc:
            fail(exc)
    Worker._server_init = reporting_server_init
except (ImportError, AttributeError):
    pass
client = logging.getLogger("ray.util.client")
client.setLevel(logging.DEBUG)
client.addHandler(logging.StreamHandler(sys.stderr))
try:
    ray.init(address=sys.argv[1], log_to_driver=False, logging_level=logging.WARNING)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    print(json.dumps({"ok": True, "nodes": len(nodes), "resources": ray.cluster_resources()}), flush=True)
    ray.shutdown()
except BaseException as exc:
    fail(exc)
sys.stdout.flush()
os._exit(0)
"""


def token_available(token_file: str = "") -> bool:
    """True when Ray will find an auth token: ``token_file``, ``$RAY_AUTH_TOKEN``,
    ``$RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``."""
    if token_file or os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return True
    return (Path.home() / ".ray" / "auth_token").is_file()


def auth_environment(address: str, token_file: str = "") -> dict[str, str]:
    """The Ray variables to set in the driver before joining ``address`` (values never logged).

    Raises:
        InputError: ``token_file`` is not a readable, non-empty file.
    """
    env: dict[str, str] = {}
    if address in LOCAL_ADDRESSES:
        return env  # a private cluster sets up its own token
    if token_file:
        path = Path(token_file).expanduser().resolve()
        try:
            empty = not path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(
                f"[execution] token_file {str(path)!r} cannot be read ({type(exc).__name__}); "
                "point it at a file holding the cluster's token (`ray get-auth-token` on the head node prints it)"
            ) from None
        if empty:
            raise InputError(f"[execution] token_file {str(path)!r} is empty; write the cluster's token into it")
        env["RAY_AUTH_TOKEN_PATH"] = str(path)
    if "RAY_AUTH_MODE" not in os.environ and token_available(token_file):
        env["RAY_AUTH_MODE"] = "token"
    return env


def apply_auth_environment(env: dict[str, str]) -> None:
    """Set the variables in this process, and have an already imported Ray read them again."""
    if not env:
        return
    os.environ.update(env)
    raylet = sys.modules.get("ray._raylet")
    if raylet is not None and hasattr(raylet, "Config"):  # Ray caches its config at import
        raylet.Config.initialize("")


def check_address_syntax(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``HOST:PORT`` or ``ray://HOST:PORT``; None for auto and local."""
    if address in (*LOCAL_ADDRESSES, "auto"):
        return None
    host, _, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"Ray address {address!r} is not HOST:PORT (or auto, or ray://HOST:PORT)")
    return host, int(port)


def check_reachable(address: str, *, timeout: float) -> None:
    """The port of ``address`` accepts a connection within ``timeout`` seconds (auto and
    local are left to Ray).

    Raises:
        InputError: naming the address and why it cannot be reached.
    """
    import socket

    target = check_address_syntax(address)
    if target is None:
        return
    try:
        with socket.create_connection(target, timeout=timeout):
            pass
    except OSError as exc:
        from repalign._io import describe_os_error

        reason = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else describe_os_error(exc)
        server = "--ray-client-server-port=PORT" if address.startswith("ray://") else "--port=PORT"
        raise InputError(
            f"No Ray cluster answers at {address} ({reason}); start one with `ray start --head {server}`, "
            "or fix --address / [execution] address"
        ) from None


def probe_cluster(address: str, *, timeout: float, env: dict[str, str] | None = None) -> dict:
    """Join ``address`` from a child process and leave; returns ``{"nodes", "resources"}``.

    A Ray Client server that died as it started (:func:`client_server_died`) is asked for
    again while time is left.

    Raises:
        InputError: the cluster cannot be reached, refuses the token, runs another Ray or
            Python version, or does not answer within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    check_reachable(address, timeout=timeout)
    deaths = 0
    while True:
        probe = _probe_once(address, deadline=deadline, env=env)
        deaths += probe.server_died
        if not probe.server_died or time.monotonic() + CLIENT_SERVER_RETRY_PAUSE_S >= deadline:
            break
        log.info(
            "The Ray Client server that %s started for this driver died at start (%d so far); asking again",
            address,
            deaths,
        )
        time.sleep(CLIENT_SERVER_RETRY_PAUSE_S)
    result = probe.result
    if probe.refused or (result and _AUTH_REFUSED.search(result.get("error", ""))):
        raise InputError(
            f"The Ray cluster at {address} refused the authentication token (missing or wrong): set "
            "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or [execution] token_file to the cluster's token "
            "(`ray get-auth-token` on the head node prints it)"
        )
    if probe.server_died or (deaths and result is None):  # the last one may have run out of time
        times = f"{deaths} time{'s' if deaths != 1 else ''}"
        raise InputError(
            f"Cannot join the Ray cluster at {address}: the Ray Client server it starts for each driver died at "
            f"start {times} within {timeout:g} s (its log is ray_client_server_PORT.err on the head node); "
            "try again with a longer --connect-timeout, or join through the GCS address (HOST:PORT) from a "
            "node of the cluster"
        )
    if result is None:
        if probe.returncode not in (0, None) and time.monotonic() < deadline:
            detail = next(
                (line for line in reversed(probe.stderr_tail) if line.strip()), f"exit code {probe.returncode}"
            )
            raise InputError(f"Cannot join the Ray cluster at {address}: {_one_line(detail)}")
        raise InputError(
            f"The Ray cluster at {address} did not answer within {timeout:g} s (--connect-timeout); "
            "check the address, that the cluster is up, and that this machine reaches every port of its head node"
        )
    if not result.get("ok"):
        error = _one_line(result.get("error", ""))
        if "Version mismatch" in error:
            raise InputError(
                f"Ray or Python version mismatch with the cluster at {address}: {error}; run the driver with the "
                "cluster's Ray and Python versions"
            )
        raise InputError(f"Cannot join the Ray cluster at {address}: {error}")
    return {"nodes": result.get("nodes"), "resources": result.get("resources", {})}


def client_server_died(text: str) -> bool:
    """True when ``text`` (an error or a log line of Ray Client) says the server process the
    cluster started for this driver died as it started -- worth another attempt."""
    return bool(_CLIENT_SERVER_DIED.search(text))


@dataclass
class _Probe:
    """What one probe child printed: its JSON line (None when it printed none), whether the
    cluster refused the token or the driver's Ray Client server died, and its last stderr lines."""

    result: dict | None
    refused: bool
    server_died: bool
    returncode: int | None
    stderr_tail: list[str]


def _probe_once(address: str, *, deadline: float, env: dict[str, str] | None) -> _Probe:
    child = subprocess.Popen(
        [sys.executable, "-c", _PROBE, address],
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,  # never receives the terminal's Ctrl-C; stopped below
    )
    refused, died, stop = threading.Event(), threading.Event(), threading.Event()
    stderr_tail: list[str] = []

    def watch_stderr() -> None:
        for line in child.stderr:
            stderr_tail[:] = [*stderr_tail[-19:], line.rstrip()]
            if _AUTH_REFUSED.search(line):
                refused.set()
            if client_server_died(line):
                died.set()
            if refused.is_set() or died.is_set():
                stop.set()

    watcher = threading.Thread(target=watch_stderr, daemon=True, name="ray-probe-stderr")
    watcher.start()
    try:
        while child.poll() is None and not stop.is_set() and time.monotonic() < deadline:
            stop.wait(0.1)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    out = child.stdout.read() if child.stdout else ""
    watcher.join(timeout=2)
    result = _last_json(out)
    server_died = died.is_set() or bool(result and not result.get("ok") and client_server_died(result.get("error", "")))
    return _Probe(result, refused.is_set(), server_died and not refused.is_set(), child.returncode, stderr_tail)


def _last_json(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
    return None


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()[:500]


def check_cluster(address: str, *, timeout: float, token_file: str = "") -> None:
    """Before any work: the Ray cluster at ``address`` lets this driver join (reachable, token
    accepted, same Ray and Python versions), within ``timeout`` seconds. A private cluster
    (``""``) and a Ray already initialised in this process are not checked.

    Raises:
        InputError: one line naming the address and the problem.
    """
    if address in LOCAL_ADDRESSES:
        return
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return
    env = auth_environment(address, token_file)
    found = probe_cluster(address, timeout=timeout, env=env)
    log.info("Ray cluster at %s: %s alive nodes, %s", address, found["nodes"], found["resources"])
