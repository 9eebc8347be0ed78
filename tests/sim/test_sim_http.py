"""The simulator's HTTP/1.1 side, spoken byte by byte over one socket to 127.0.0.1."""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import Iterator

import pytest

from hubkit.testing import BybitSimulator

TIME = b"GET /v5/market/time HTTP/1.1\r\nHost: sim\r\n\r\n"


class Client:
    """One socket to the simulator; reads responses one by one (pipelined ones too)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _more(self, what: str) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"the connection closed {what}: {self.buffer!r}"
        self.buffer += chunk

    def response(self, *, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One response: status, headers (lower-case names) and the body its Content-Length
        says (none when ``head_only``, as for a HEAD request)."""
        while b"\r\n\r\n" not in self.buffer:
            self._more("before a whole head arrived")
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        version, status_text, _ = lines[0].split(" ", 2)
        assert version == "HTTP/1.1", f"not a status line: {lines[0]!r}"
        status = int(status_text)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = 0 if head_only else int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            self._more("inside a body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def closed(self) -> bool:
        """True when the server closed the connection with nothing more to read."""
        return not self.buffer and self.sock.recv(65536) == b""


@pytest.fixture
def client(bybit_sim_session: BybitSimulator) -> Iterator[Client]:
    port = urllib.parse.urlsplit(bybit_sim_session.rest_url).port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        yield Client(sock)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /v5/market/time\r\n\r\n",  # no HTTP version
        b"GET /v5/market/time HTTP/1.1\r\nHost: sim\r\nContent-Length: abc\r\n\r\n",
        b"GET /v5/market/time HTTP/1.1\r\nHost: sim\r\nContent-Length: -5\r\n\r\n",
    ],
    ids=["no-request-line", "no-version", "content-length-text", "content-length-negative"],
)
def test_a_request_that_cannot_be_read_gets_400_and_the_connection_closes(
    client: Client, request_bytes: bytes
) -> None:
    client.send(request_bytes)
    status, headers, body = client.response()
    assert status == 400
    assert headers["connection"] == "close"
    assert body.startswith(b"400 Bad Request")
    assert client.closed()


def test_head_has_the_get_headers_and_no_body_and_the_connection_goes_on(
    client: Client,
) -> None:
    client.send(TIME)
    status, get_headers, get_body = client.response()
    assert status == 200 and get_body
    client.send(TIME.replace(b"GET", b"HEAD", 1))
    status, head_headers, head_body = client.response(head_only=True)
    assert status == 200 and head_body == b""
    assert head_headers["content-type"] == get_headers["content-type"]
    assert int(head_headers["content-length"]) > 0
    client.send(TIME)  # the same connection still answers
    status, _, body = client.response()
    assert status == 200 and b'"retCode":0' in body


def test_a_chunked_body_is_read_as_the_body_not_as_the_next_request(client: Client) -> None:
    chunked = (
        b"POST /v5/order/create HTTP/1.1\r\nHost: sim\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"7\r\nGET / H\r\n9\r\nTTP/1.1\r\n\r\n0\r\n\r\n"
    )
    client.send(chunked + TIME)
    status, _, body = client.response()
    assert status == 404 and body == b"404 page not found"
    status, _, body = client.response()  # the next answer is the time, nothing in between
    assert status == 200 and b'"timeSecond"' in body


def test_a_content_length_body_is_skipped_whole(client: Client) -> None:
    payload = b'{"symbol": "BTCUSDT"}'
    request = (
        b"POST /v5/order/create HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    client.send(request + TIME)
    assert client.response()[0] == 404
    assert client.response()[0] == 200


def test_connection_close_is_honoured(client: Client) -> None:
    client.send(TIME.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    status, headers, _ = client.response()
    assert status == 200 and headers["connection"] == "close"
    assert client.closed()
