"""tls.TLSSocket: TLS read many records at a time, with the SSLSocket behaviour
websocket-client and frames.FrameReader rely on."""

import socket
import ssl
import threading

import pytest

from binance_streamer import tls
from binance_streamer.simulator.tls import Certificates


@pytest.fixture
def pair():
    """A connected (TLSSocket, server SSLSocket) over loopback, certificates checked."""
    certs = Certificates()
    listener = socket.create_server(("127.0.0.1", 0))
    accepted = {}

    def accept():
        conn, _ = listener.accept()
        accepted["server"] = certs.context.wrap_socket(conn, server_side=True)
    thread = threading.Thread(target=accept)
    thread.start()
    raw = socket.create_connection(listener.getsockname(), timeout=10)
    client = tls.client_context(certs.ca_file).wrap_socket(raw, server_hostname="127.0.0.1")
    thread.join(10)
    server = accepted["server"]
    yield client, server
    client.close()
    server.close()
    listener.close()
    certs.close()


def read_all(client, size):
    """Read until ``size`` bytes came; (bytes, recv_into calls that returned data)."""
    buf, got, calls = bytearray(1 << 20), 0, 0
    while got < size:
        n = client.recv_into(memoryview(buf)[got:])
        assert n, "the connection ended early"
        got, calls = got + n, calls + 1
    return bytes(buf[:got]), calls


def test_many_records_come_back_from_one_read(pair):
    client, server = pair
    records = [b"%05d" % i * 30 for i in range(200)]       # 200 records of 150 bytes, one write each
    for r in records:
        server.sendall(r)
    data, calls = read_all(client, sum(map(len, records)))
    assert data == b"".join(records)
    assert calls < 20                                       # an SSLSocket takes one call per record: 200


def test_a_read_that_would_block_raises_want_read_and_the_end_reads_as_zero(pair):
    client, server = pair
    client.settimeout(0.0)
    with pytest.raises(ssl.SSLWantReadError):
        client.recv_into(bytearray(100))
    client.settimeout(10)
    server.sendall(b"last")
    assert read_all(client, 4)[0] == b"last"
    server.shutdown(socket.SHUT_RDWR)
    assert client.recv_into(bytearray(100)) == 0


def test_a_blocking_read_times_out_as_a_socket_does(pair):
    client, _ = pair
    client.settimeout(0.2)
    with pytest.raises(socket.timeout):
        client.recv_into(bytearray(100))


def test_what_the_client_sends_arrives_whole_and_pending_counts_unread_bytes(pair):
    client, server = pair
    client.sendall(b"pong" * 1000)
    got = b""
    while len(got) < 4000:
        got += server.recv(65536)
    assert got == b"pong" * 1000
    server.sendall(b"x" * 3000)                             # one record
    assert client.recv_into(bytearray(5000), 1000) == 1000  # never more than asked for
    assert client.pending() == 2000                         # the record's rest, decrypted, waits
    assert read_all(client, 2000)[0] == b"x" * 2000
    assert client.pending() == 0


def test_a_certificate_for_another_host_is_refused():
    certs = Certificates()
    listener = socket.create_server(("127.0.0.1", 0))

    def accept():
        conn, _ = listener.accept()
        try:
            certs.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            pass
        conn.close()
    thread = threading.Thread(target=accept)
    thread.start()
    raw = socket.create_connection(listener.getsockname(), timeout=10)
    with pytest.raises(ssl.SSLCertVerificationError):
        tls.client_context(certs.ca_file).wrap_socket(raw, server_hostname="stream.binance.com")
    raw.close()
    thread.join(10)
    listener.close()
    certs.close()


def test_frame_reader_over_tls_takes_every_record_answers_pings_and_sees_the_close(pair):
    """Production's read path: one record per frame, as Binance writes
    them; a ping among them is answered through the same TLS socket while
    the reader reads, and the close comes after every message."""
    from binance_streamer.frames import Closed, FrameReader

    class Peer:
        def __init__(self, sock):
            self.sock = sock

        def pong(self, payload):
            self.sock.sendall(bytes((0x8A, 0x80 | len(payload))) + b"\0\0\0\0" + payload)

        def send_close(self):
            pass

    client, server = pair
    messages = [b'{"u":%d,"pad":"%s"}' % (i, b"x" * (i * 53 % 400)) for i in range(300)]
    for i, m in enumerate(messages):
        server.sendall(bytes((0x81, len(m))) + m if len(m) < 126 else bytes((0x81, 126)) + len(m).to_bytes(2, "big") + m)
        if i == 150:
            server.sendall(bytes((0x89, 4)) + b"ping")
    server.sendall(bytes((0x88, 2)) + (1000).to_bytes(2, "big"))
    reader = FrameReader(Peer(client))
    got = []
    with pytest.raises(Closed) as exc:
        while True:
            got += reader.read(5)
    assert got == messages and exc.value.code == 1000
    assert server.recv(10) == bytes((0x8A, 0x84)) + b"\0\0\0\0ping"
