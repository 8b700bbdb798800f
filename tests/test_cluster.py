"""A study on a real, token-authenticated two-node Ray cluster started with `ray start`.

The fixture starts a head node (`ray start --head` on free ports, with a Ray Client server)
and a second node (`ray start --address`) on this machine, each in its own process session
under a private RAY_TMPDIR, with a random auth token. It stops exactly the processes it
started -- every member of those sessions and their descendants (Ray's workers start their
own process groups), found through /proc -- even when a test fails; never `ray stop`, which
would stop every Ray process of the user.

Covered: the tiny study through `--address HOST:PORT`, `ray://HOST:PORT` and `auto` gives
values identical to the local executor, each unit's node shows in the progress, and the
embeddings computed on the workers land in the driver's cache; killing the second node
mid-study leaves a study that finishes with the lost unit retried elsewhere, and a resume
changes nothing; a wrong address and a wrong token are one line and exit code 2 within the
connect timeout.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from repalign.store import load_study
from repalign.study.config import parse_config
from repalign.study.run import run_study

PROJECT = Path(__file__).resolve().parents[1]
RAY = Path(sys.executable).with_name("ray")
MODELS = ("pixels", "cifar_resnet:resnet20")
KEY = ["model", "stage", "dataset", "metric", "head", "shots"]
VALUES = ["model_id", "similarity", "value", "ci_low", "ci_high", "n", "status", "error"]

pytestmark = [
    pytest.mark.ray,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fixture finds its processes in /proc"),
]


def study_toml(output: Path, *, executor: str = "ray") -> str:
    models = ", ".join(f'"{m}"' for m in MODELS)
    return f"""
[study]
name = "cluster"
output = "{output}"
report = false

[models]
include = [{models}]

[alignment]
human = ["peterson:animals"]
n_bootstrap = 20

[fewshot]
datasets = ["mnist"]
shots = [1, 5]
heads = ["linear"]
seeds = 2
max_eval_per_class = 10

[execution]
executor = "{executor}"
jobs = 1
threads = 1
device = "cpu"
"""


def sorted_values(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(KEY, na_position="first").reset_index(drop=True)[KEY + VALUES]


# ---------------------------------------------------------------------------------------
# the cluster fixture
# ---------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, pgid) of a running process; None when it is gone or a zombie (dead, not yet reaped)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, pgrp, ...
    return None if fields[0] == "Z" else (int(fields[1]), int(fields[2]))


def session_processes(leader: int) -> set[int]:
    """Every live process of the process group ``leader`` started, and all their descendants."""
    stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := _proc_stat(int(p))) is not None}
    found = {pid for pid, (_, pgid) in stats.items() if pgid == leader}
    while True:
        more = {pid for pid, (ppid, _) in stats.items() if ppid in found} - found
        if not more:
            return found
        found |= more


def stop_session(leader: int, *, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, to exactly the processes of one `ray start` (and their children)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        pids = session_processes(leader)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and session_processes(leader):
            time.sleep(0.2)
        if not session_processes(leader):
            return


@dataclass
class Cluster:
    port: int
    client_port: int
    env: dict[str, str]  # what a driver on this machine has: Ray's temp dir, the token, repalign's homes
    head: int  # process-group leader of each `ray start`
    worker: int
    logs: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_address(self) -> str:
        return f"ray://127.0.0.1:{self.client_port}"


def _ray_start(args: list[str], env: dict[str, str], log: Path) -> int:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(RAY), "start", *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            stop_session(proc.pid)
            raise
    if code != 0:
        stop_session(proc.pid)
        raise RuntimeError(f"ray start {' '.join(args)} failed ({code}):\n{log.read_text()[-3000:]}")
    return proc.pid


# Python runs this at the start of every process of a test cluster started with
# client_server_deaths: the Ray Client servers the head starts for drivers (through Ray's
# setup_worker shim) die at once on the starts the deaths file lists (1-based), as Ray's own
# sometimes do on a loaded head node.
_SERVER_DEATHS = """
import os, sys
if sys.argv[0].endswith("setup_worker.py") and "--mode=specific-server" in sys.argv:
    with open(os.environ["REPALIGN_TEST_STARTS"], "a+") as starts:
        starts.write("x")
        starts.seek(0)
        number = len(starts.read())
    with open(os.environ["REPALIGN_TEST_DEATHS"]) as deaths:
        die = str(number) in deaths.read().split(",")
    if die:
        os._exit(1)
"""


@contextlib.contextmanager
def ray_cluster(tmp_path: Path, *, fault: str | None = None, client_server_deaths: str | None = None):
    """A head node and a second node, one CPU each, token authentication on.

    ``fault``: ``$REPALIGN_TEST_FAULT`` for the units. ``client_server_deaths``: which of the
    Ray Client servers started for drivers die at start ("1,3": the first and the third), kept
    in the file ``tmp_path/client-server-deaths`` (a test may rewrite it); the file
    ``tmp_path/client-server-starts`` gets one byte per start.
    """
    root = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    port, client_port = free_port(), free_port()
    env = {
        **os.environ,
        "RAY_TMPDIR": str(root),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": os.pathsep.join([str(PROJECT / "src"), os.environ.get("PYTHONPATH", "")]),
        # a node lost is noticed within seconds, not Ray's default of ~30 s
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_failure_threshold": "3",
    }
    env.pop("RAY_ADDRESS", None)
    if fault:
        env["REPALIGN_TEST_FAULT"] = fault
    if client_server_deaths:
        (tmp_path / "site").mkdir()
        (tmp_path / "site" / "sitecustomize.py").write_text(_SERVER_DEATHS)
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), env["PYTHONPATH"]])
        (tmp_path / "client-server-deaths").write_text(client_server_deaths)
        env["REPALIGN_TEST_DEATHS"] = str(tmp_path / "client-server-deaths")
        env["REPALIGN_TEST_STARTS"] = str(tmp_path / "client-server-starts")
        # the proxy gives up on a dead server after this many seconds, not 30
        env["RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S"] = "3"
    common = ["--num-cpus=1", "--object-store-memory=150000000", "--disable-usage-stats"]
    logs = tmp_path / "ray-start.log"
    leaders: list[int] = []
    try:
        head = _ray_start(
            [
                "--head",
                f"--port={port}",
                f"--ray-client-server-port={client_port}",
                "--include-dashboard=false",
                *common,
            ],
            env,
            logs,
        )
        leaders.append(head)
        worker = _ray_start([f"--address=127.0.0.1:{port}", *common], env, logs)
        leaders.append(worker)
        driver_env = {k: v for k, v in env.items() if k not in ("RAY_AUTH_MODE", "REPALIGN_TEST_FAULT")}
        if client_server_deaths:
            driver_env["PYTHONPATH"] = env["PYTHONPATH"].split(os.pathsep, 1)[1]  # drivers run unchanged
        _wait_for_nodes(driver_env, port, 2)
        yield Cluster(port, client_port, driver_env, head, worker, logs)
    finally:
        for leader in reversed(leaders):
            stop_session(leader)
        left = {pid for leader in leaders for pid in session_processes(leader)}
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"processes of the test cluster still running: {sorted(left)}"


def _wait_for_nodes(env: dict[str, str], port: int, n: int, timeout: float = 60) -> None:
    script = (
        "import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
        "print(sum(1 for x in ray.nodes() if x['Alive']))"
    )
    deadline = time.monotonic() + timeout
    env = {**env, "RAY_AUTH_MODE": "token"}
    while time.monotonic() < deadline:
        out = subprocess.run(
            [sys.executable, "-c", script, f"127.0.0.1:{port}"], env=env, capture_output=True, text=True, timeout=60
        )
        if out.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(1)
    raise RuntimeError(f"the test cluster did not reach {n} nodes")


def run_cli(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "import sys; from repalign.cli import main; sys.exit(main())", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference(tmp_path_factory, mirror):
    """The tiny study on the local executor: the values every cluster run must equal."""
    out = tmp_path_factory.mktemp("local") / "study"
    outcome = run_study(parse_config(study_toml(out, executor="local")), live=False)
    assert outcome.exit_code == 0
    print(f"local executor (1 job): {outcome.duration_s:.1f} s")
    return load_study(out)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, mirror):
    with ray_cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


@pytest.mark.parametrize("form", ["gcs", "client", "auto"])
def test_every_address_form_gives_the_local_values(cluster, reference, tmp_path, form):
    address = {"gcs": cluster.address, "client": cluster.client_address, "auto": "auto"}[form]
    config = tmp_path / "study.toml"
    config.write_text(study_toml(tmp_path / "study"))
    env = {**cluster.env, "REPALIGN_CACHE_HOME": str(tmp_path / "driver-cache")}
    started, started_ns = time.monotonic(), time.time_ns()
    # a generous join: a ray:// client starts a server process for this driver first, which on
    # the shared 2-core machine under the rest of the suite took over the default 30 s once
    join = ["--connect-timeout", "120"]
    result = run_cli(["run", str(config), "--address", address, "--no-live", *join], env)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    got = load_study(tmp_path / "study")
    pd.testing.assert_frame_equal(sorted_values(got.results), sorted_values(reference.results), check_exact=True)
    # the live view says where each unit ran (ip/node id)
    nodes = set(re.findall(r": running on (\S+)", result.stdout))
    assert nodes and all(re.fullmatch(r"[\d.]+/[0-9a-f]{8}", n) for n in nodes), result.stdout
    # embeddings computed on the workers came back to the driver's cache, one entry per
    # (model, image set): Peterson animals and the few-shot images of each model
    from repalign.embed import EmbeddingCache

    cached = EmbeddingCache(tmp_path / "driver-cache").entries()
    assert sorted({e["model"] for e in cached}) == sorted(MODELS) and len(cached) == 2 * len(MODELS)
    print(f"{form}: {elapsed:.1f} s, nodes {sorted(nodes)}")
    # the tasks read and wrote inputs in their node's store (the nodes' cache home), which
    # outlives them, not in their temporary embedding caches
    from repalign.embed import InputCache

    node_inputs = InputCache(Path(cluster.env["REPALIGN_CACHE_HOME"]) / "inputs").entries()
    assert any(m["last_used_ns"] >= started_ns for m in node_inputs), node_inputs  # touched on every read
    if form != "gcs":
        return
    # the same study into a new directory: the driver ships its cached embeddings with each
    # unit, so the workers (whose caches are temporary) compute none
    started = time.monotonic()
    again = run_cli(["-v", "run", str(config), "--address", address, "--no-live", "--output", str(tmp_path / "b")], env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    returned = re.findall(r"(\S+) ran on \S+ with .*; (\d+) embedding arrays returned", again.stderr)
    assert sorted(returned) == sorted((m, "0") for m in MODELS), again.stderr[-3000:]
    got = load_study(tmp_path / "b")
    pd.testing.assert_frame_equal(sorted_values(got.results), sorted_values(reference.results), check_exact=True)
    print(f"{form}, embeddings from the driver's cache: {time.monotonic() - started:.1f} s")


def test_a_node_lost_mid_study_is_retried_and_resume_changes_nothing(tmp_path, reference, mirror):
    with ray_cluster(tmp_path, fault="*:alignment:slow") as c:  # every unit sleeps 10 s at its start
        config = tmp_path / "study.toml"
        config.write_text(study_toml(tmp_path / "study"))
        env = {**c.env, "REPALIGN_CACHE_HOME": str(tmp_path / "driver-cache")}
        command = [sys.executable, "-c", "import sys; from repalign.cli import main; sys.exit(main())"]
        args = ["run", str(config), "--address", c.address, "--no-live"]
        driver = subprocess.Popen([*command, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        try:
            nodes: set[str] = set()
            deadline = time.monotonic() + 300
            while len(nodes) < 2 and time.monotonic() < deadline:  # both units running, one per node
                line = driver.stdout.readline()
                if not line:
                    break
                lines.append(line)
                nodes |= set(re.findall(r": running on (\S+)", line))
            assert len(nodes) == 2, "".join(lines)
            killed_at = time.monotonic()
            stop_session(c.worker, grace=0)  # SIGKILL the second node's raylet, agents and workers
            out, err = driver.communicate(timeout=400)
        finally:
            if driver.poll() is None:
                driver.kill()
        output = "".join(lines) + out
        assert driver.returncode == 0, output[-3000:] + err[-3000:]
        assert "(attempt 2)" in output, output  # the lost unit ran again, on the head node
        got = load_study(tmp_path / "study")
        pd.testing.assert_frame_equal(sorted_values(got.results), sorted_values(reference.results), check_exact=True)
        print(f"node killed; study finished {time.monotonic() - killed_at:.1f} s later")

        again = run_cli(args, env)  # resume on the one-node cluster: nothing to do
        assert again.returncode == 0 and "2 already finished, 0 run" in again.stdout, again.stdout + again.stderr
        pd.testing.assert_frame_equal(
            sorted_values(load_study(tmp_path / "study").results), sorted_values(reference.results), check_exact=True
        )


def test_a_ray_client_server_that_dies_at_start_is_asked_for_again(tmp_path, reference, mirror):
    """Ray's proxy forks each driver's Ray Client server from a multithreaded process; on a
    loaded head node the first ones sometimes die at once (CI saw it). The check before the run
    and the run's own join both ask again, within the connect timeout."""
    with ray_cluster(tmp_path, client_server_deaths="1,3") as c:  # the check's first, the join's first
        config = tmp_path / "study.toml"
        config.write_text(study_toml(tmp_path / "study"))
        env = {**c.env, "REPALIGN_CACHE_HOME": str(tmp_path / "driver-cache")}
        args = ["run", str(config), "--address", c.client_address, "--no-live", "--connect-timeout", "120"]
        result = run_cli(["-v", *args], env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        # the two chosen to die did (start 3 came), two served; Ray's own deaths come on top,
        # before Python runs (so uncounted here), and were seen here even on an idle machine
        assert len((tmp_path / "client-server-starts").read_text()) == 4
        assert result.stderr.count("died at start") >= 2, result.stderr[-3000:]
        got = load_study(tmp_path / "study")
        pd.testing.assert_frame_equal(sorted_values(got.results), sorted_values(reference.results), check_exact=True)

        # every server dies: one line naming the problem, within the timeout
        (tmp_path / "client-server-starts").write_text("")
        (tmp_path / "client-server-deaths").write_text(",".join(map(str, range(1, 100))))
        started = time.monotonic()
        failed = run_cli([*args[:-1], "20", "--output", str(tmp_path / "b")], env, timeout=120)
        elapsed = time.monotonic() - started
    line = one_error_line(failed, "died at start")
    assert len((tmp_path / "client-server-starts").read_text()) >= 2, line  # asked again
    assert elapsed < 20 + 30, line  # the timeout, plus one attempt begun before it ran out
    assert not (tmp_path / "b").exists()
    print(f"every Ray Client server died: {elapsed:.1f} s: {line}")


def one_error_line(result: subprocess.CompletedProcess, contains: str) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert contains in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("form", ["gcs", "client"])
def test_a_wrong_token_is_one_line_and_exit_2_within_the_timeout(cluster, tmp_path, form):
    address = cluster.address if form == "gcs" else cluster.client_address
    config = tmp_path / "study.toml"
    config.write_text(study_toml(tmp_path / "study"))
    env = {**cluster.env, "RAY_AUTH_TOKEN": secrets.token_hex(16)}
    started = time.monotonic()
    result = run_cli(["run", str(config), "--address", address, "--connect-timeout", "20"], env, timeout=60)
    elapsed = time.monotonic() - started
    line = one_error_line(result, "refused the authentication token")
    assert env["RAY_AUTH_TOKEN"] not in result.stderr + result.stdout and cluster.env["RAY_AUTH_TOKEN"] not in line
    assert elapsed < 20 + 10  # the timeout, plus starting Python and importing repalign
    assert not (tmp_path / "study").exists()
    print(f"wrong token ({form}): {elapsed:.1f} s: {line}")


@pytest.mark.parametrize("address", ["127.0.0.1:CLOSED", "ray://127.0.0.1:CLOSED", "10.255.255.1:6379"])
def test_a_wrong_address_is_one_line_and_exit_2_within_the_timeout(tmp_path, address, mirror):
    config = tmp_path / "study.toml"
    config.write_text(study_toml(tmp_path / "study"))
    started = time.monotonic()
    address = address.replace("CLOSED", str(free_port()))
    result = run_cli(["run", str(config), "--address", address, "--connect-timeout", "3"], dict(os.environ), timeout=60)
    elapsed = time.monotonic() - started
    # a closed port is refused at once; an address nothing answers (or where a middlebox only
    # accepts TCP, as on some sandboxes) runs into the timeout
    line = one_error_line(result, address)
    assert "No Ray cluster answers at" in line or "did not answer within 3 s" in line, line
    assert elapsed < 3 + 10
    print(f"wrong address {address}: {elapsed:.1f} s: {line}")


def test_each_task_gets_the_resources_of_its_model_size(tmp_path, mirror, caplog, monkeypatch):
    """On a real local Ray cluster with one (logical) GPU: a model of unpublished size asks for
    the documented memory and a whole GPU, and Ray grants exactly that to its task."""
    import logging

    import ray

    from repalign import _options as opt

    monkeypatch.setenv("REPALIGN_CACHE_HOME", str(tmp_path / "cache"))
    config = parse_config(study_toml(tmp_path / "study")).replace("fewshot", datasets=[])
    config = config.replace("models", include=["cifar_resnet:resnet20"])
    ray.init(address="local", num_cpus=1, num_gpus=1, include_dashboard=False, object_store_memory=100_000_000)
    try:
        with caplog.at_level(logging.INFO, logger="repalign.study.ray_executor"):
            outcome = run_study(config, live=False)
    finally:
        ray.shutdown()
    assert outcome.exit_code == 0
    granted = [r.getMessage() for r in caplog.records if " ran on " in r.getMessage()]
    assert len(granted) == 1, granted
    memory = opt.UNIT_BASE_MEMORY_BYTES + opt.UNKNOWN_MODEL_BYTES
    assert "'GPU': 1.0" in granted[0] and "'CPU': 1.0" in granted[0], granted[0]
    assert f"'memory': {float(memory)}" in granted[0] or f"'memory': {memory}" in granted[0], granted[0]


def test_the_token_can_come_from_a_token_file(cluster, tmp_path, monkeypatch):
    """``[execution] token_file``: the right token joins, a wrong, missing or empty one is one
    clear error; this process's own environment holds no token (only ~/.ray may, another one)."""
    from repalign.errors import InputError
    from repalign.study.cluster import check_cluster

    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE", "RAY_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    right, wrong, empty = tmp_path / "right", tmp_path / "wrong", tmp_path / "empty"
    right.write_text(cluster.env["RAY_AUTH_TOKEN"] + "\n")
    wrong.write_text(secrets.token_hex(16))
    empty.write_text("\n")
    for address in (cluster.address, cluster.client_address):
        # generous: a ray:// join starts a server process first, over 30 s once under CI's load
        check_cluster(address, timeout=120, token_file=str(right))
        with pytest.raises(InputError, match="refused the authentication token"):
            check_cluster(address, timeout=120, token_file=str(wrong))
    with pytest.raises(InputError, match="token_file .* cannot be read"):
        check_cluster(cluster.address, timeout=30, token_file=str(tmp_path / "absent"))
    with pytest.raises(InputError, match="token_file .* is empty"):
        check_cluster(cluster.address, timeout=30, token_file=str(empty))
    assert "RAY_AUTH_MODE" not in os.environ  # the check changed nothing in this process
