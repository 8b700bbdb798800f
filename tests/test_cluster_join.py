"""Which failures to join a Ray cluster are worth another attempt. The three deaths below are
what Ray 2.60 printed on this machine (paths shortened; tests/test_cluster.py makes servers die
on a real cluster); the other texts stand for failures another attempt cannot mend. Fast: no
cluster is started here."""

from __future__ import annotations

import pytest

from repalign.study.cluster import client_server_died

# the driver's Ray Client server died before the proxy saw it run (its log stays empty) ...
DIED_UNSEEN = (
    "ConnectionAbortedError: Initialization failure from server: Traceback (most recent call last): "
    'File ".../ray/util/client/server/proxier.py", line 772, in Datapath raise RuntimeError( '
    "RuntimeError: Starting Ray client server failed. See ray_client_server_23001.err for detailed logs."
)
# ... while the proxy looked at its command line ...
DIED_WHILE_LOOKED_AT = (
    "ConnectionAbortedError: Initialization failure from server: Traceback (most recent call last): "
    'File ".../ray/util/client/server/proxier.py", line 765, in Datapath if not '
    'self.proxy_manager.start_specific_server( File ".../ray/util/client/server/proxier.py", line 396, '
    "in start_specific_server cmd = psutil_proc.cmdline()"
)
# ... or after it had started, before it answered
DIED_AFTER_START = (
    "ConnectionAbortedError: Initialization failure from server: Traceback (most recent call last): "
    'File ".../ray/util/client/server/proxier.py", line 780, in Datapath raise RuntimeError( '
    "RuntimeError: Proxy failed to Connect to backend! Check `ray_client_server.err` and "
    "`ray_client_server_23002.err` on the head node of the cluster for the relevant logs."
)


@pytest.mark.parametrize("error", [DIED_UNSEEN, DIED_WHILE_LOOKED_AT, DIED_AFTER_START])
def test_a_client_server_that_died_at_start_is_asked_for_again(error):
    assert client_server_died(error)


@pytest.mark.parametrize(
    "error",
    [
        "ConnectionError: Invalid or missing authentication token",  # a wrong token: asking again cannot help
        "RuntimeError: Version mismatch: The cluster was started with: Ray: 2.52.0 Python: 3.12.3 "
        "This process on node 10.0.0.2 was started with: Ray: 2.60.0 Python: 3.11.9",
        "ConnectionError: ray client connection timeout",
        "",
    ],
)
def test_other_join_failures_are_not_retried(error):
    assert not client_server_died(error)
