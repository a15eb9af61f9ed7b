"""The WebSocket frame reader against hand-built server frames (RFC 6455)."""

import random
import socket
import struct

import pytest

from binance_streamer.frames import Closed, FrameReader, ProtocolError


def frame(payload, opcode=0x1, fin=True, mask=False):
    b0 = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, n | (0x80 if mask else 0))
    elif n < 65536:
        head = struct.pack("!BBH", b0, 126, n)
    else:
        head = struct.pack("!BBQ", b0, 127, n)
    return head + (b"\0\0\0\0" if mask else b"") + payload


class FakeWs:
    """What the reader needs of a websocket-client WebSocket."""

    def __init__(self, sock):
        self.sock = sock
        self.pongs, self.closes = [], 0

    def pong(self, payload):
        self.pongs.append(bytes(payload))

    def send_close(self):
        self.closes += 1


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.settimeout(2)
    yield a, b
    a.close()
    b.close()


def read_all(reader, expected):
    got = []
    while len(got) < expected:
        got += reader.read()
    return got


def test_frames_split_at_every_byte_boundary_come_out_whole_and_in_order(pair):
    a, b = pair
    rng = random.Random(7)
    messages = [bytes(rng.randrange(97, 123) for _ in range(n)) for n in (0, 1, 125, 126, 300, 65535, 65536, 70000)]
    stream = b"".join(frame(m) for m in messages)
    reader = FrameReader(FakeWs(a))
    got = []
    pos = 0
    while pos < len(stream):
        step = rng.choice([1, 2, 3, 7, 100, 4096])
        b.sendall(stream[pos:pos + step])
        pos += step
        if rng.random() < 0.5 or pos >= len(stream):
            while True:             # drain what was sent so far
                a.settimeout(0.05)
                try:
                    got += reader.read()
                except socket.timeout:
                    break
    assert got == messages


def test_many_frames_in_one_read_are_returned_together(pair):
    a, b = pair
    b.sendall(b"".join(frame(b'{"n":%d}' % i) for i in range(50)))
    reader = FrameReader(FakeWs(a))
    assert read_all(reader, 50) == [b'{"n":%d}' % i for i in range(50)]


def test_fragmented_message_is_joined_and_pings_inside_it_are_answered(pair):
    a, b = pair
    ws = FakeWs(a)
    b.sendall(frame(b"hel", fin=False) + frame(b"hi", opcode=0x9) + frame(b"lo ", opcode=0x0, fin=False)
              + frame(b"world", opcode=0x0) + frame(b"x", opcode=0xA))
    reader = FrameReader(ws)
    assert read_all(reader, 1) == [b"hello world"]
    assert ws.pongs == [b"hi"]


def test_close_returns_earlier_messages_then_raises_with_the_code(pair):
    a, b = pair
    ws = FakeWs(a)
    b.sendall(frame(b"one") + frame(b"two") + frame(struct.pack("!H", 1001) + b"bye", opcode=0x8))
    reader = FrameReader(ws)
    assert read_all(reader, 2) == [b"one", b"two"]
    with pytest.raises(Closed) as exc:
        reader.read()
    assert exc.value.code == 1001 and ws.closes == 1


@pytest.mark.parametrize("bad", [frame(b"x", mask=True), frame(b"x", opcode=0x3), frame(b"x", opcode=0x0),
                                 bytes([0xC1, 1]) + b"x", frame(b"p" * 126, opcode=0x9)])
def test_protocol_violations_raise(pair, bad):
    a, b = pair
    b.sendall(bad)
    with pytest.raises(ProtocolError):
        FrameReader(FakeWs(a)).read()


def test_a_connection_closed_without_a_close_frame_is_an_error(pair):
    a, b = pair
    b.sendall(frame(b"last"))
    b.close()
    reader = FrameReader(FakeWs(a))
    assert reader.read() == [b"last"]
    with pytest.raises(ConnectionResetError):
        reader.read()


def test_frames_over_tls_are_read_the_same_way(tmp_path):
    """Production reads wss://: the reader works on an SSLSocket as on a plain one."""
    import shutil
    import ssl
    import subprocess
    import threading
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=60)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(cert)
    a, b = socket.socketpair()
    messages = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i * 37 % 3000)) for i in range(300)]
    server_done = threading.Event()

    def serve():
        with server_ctx.wrap_socket(b, server_side=True) as tls:
            for i in range(0, len(messages), 7):        # several frames per TLS record, records of any size
                tls.sendall(b"".join(frame(m) for m in messages[i:i + 7]))
            server_done.wait(10)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    tls = client_ctx.wrap_socket(a, server_hostname="localhost")
    tls.settimeout(5)
    try:
        assert read_all(FrameReader(FakeWs(tls)), len(messages)) == messages
    finally:
        server_done.set()
        t.join(5)
        tls.close()
