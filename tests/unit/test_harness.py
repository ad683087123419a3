"""The test harness shared by tests/, bench/ and chaos/: ports and the two ways of waiting.

Real sockets and real child processes, no network beyond loopback."""

from __future__ import annotations

import http.server
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.ports import bindable, free_port, free_port_block
from harness.ready import NotReady, http_ok, wait_for, wait_ready


class _Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/readyz" else 503)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:  # quiet test output
        pass


@pytest.fixture
def server() -> Iterator[int]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_free_port_can_be_bound_and_a_taken_one_cannot() -> None:
    port = free_port()
    assert bindable(port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert not bindable(port)


def test_a_port_block_is_free_at_every_offset_below_the_ephemeral_range() -> None:
    base = free_port_block([0, 1, 100])
    assert 20_000 <= base < 28_000
    assert all(bindable(base + offset) for offset in (0, 1, 100))


def test_wait_ready_returns_once_the_url_answers_200(server: int) -> None:
    wait_ready(f"http://127.0.0.1:{server}/readyz", timeout_s=5)
    assert http_ok(f"http://127.0.0.1:{server}/readyz")
    assert not http_ok(f"http://127.0.0.1:{server}/other")  # 503 is not ready


def test_wait_ready_fails_at_once_when_the_process_exits_and_names_its_log() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(NotReady, match=r"ingest exited with 3 before it was ready; see /x\.log"):
        wait_ready(f"http://127.0.0.1:{free_port()}/readyz", proc, timeout_s=30, name="ingest", log=Path("/x.log"))


def test_wait_ready_gives_up_after_its_timeout() -> None:
    with pytest.raises(NotReady, match=r"not ready at .* within 0s"):
        wait_ready(f"http://127.0.0.1:{free_port()}/readyz", timeout_s=0.3, interval_s=0.05)


async def test_wait_for_returns_the_first_truthy_value_of_a_sync_or_async_predicate() -> None:
    calls = iter([0, None, "done"])
    assert await wait_for(lambda: next(calls), timeout_s=5, interval_s=0.01) == "done"

    async def later() -> int:
        return 7

    assert await wait_for(later, timeout_s=5) == 7


async def test_wait_for_fails_with_what_it_waited_for_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"partitions spread not met within 0.1s \(last value: \[\]\)"):
        await wait_for(list, timeout_s=0.1, interval_s=0.02, what="partitions spread")
