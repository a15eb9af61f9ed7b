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


@pytest.fixture
def tls_pair():
    """A connected (client SSLSocket, server SSLSocket) pair over a socketpair."""
    import ssl
    import threading
    import trustme
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    a, b = socket.socketpair()
    server = {}
    t = threading.Thread(target=lambda: server.setdefault("tls", server_ctx.wrap_socket(b, server_side=True)))
    t.start()
    client = client_ctx.wrap_socket(a, server_hostname="localhost")
    t.join(10)
    client.settimeout(5)
    yield client, server["tls"]
    client.close()
    server["tls"].close()


def test_frames_over_tls_are_read_the_same_way(tls_pair):
    """Production reads wss://: several frames per TLS record, records of any size."""
    import threading
    client, server = tls_pair
    messages = [b'{"n":%d,"pad":"%s"}' % (i, b"x" * (i * 37 % 3000)) for i in range(300)]

    def serve():
        for i in range(0, len(messages), 7):
            server.sendall(b"".join(frame(m) for m in messages[i:i + 7]))

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    assert read_all(FrameReader(FakeWs(client)), len(messages)) == messages
    t.join(5)


def test_one_read_takes_every_tls_record_that_is_waiting(tls_pair):
    """A server writing message by message sends one TLS record per frame;
    an SSLSocket's recv_into returns one record, so a reader that reads once
    per wake-up falls behind by all but one record each time."""
    client, server = tls_pair
    messages = [b'{"e":"bookTicker","u":%d}' % i for i in range(200)]
    for m in messages:
        server.sendall(frame(m))             # one record each
    server.sendall(frame(b"", opcode=0x8))   # and a close, so that we know everything arrived
    reader = FrameReader(FakeWs(client))
    wait_for_bytes(client, sum(len(frame(m)) for m in messages))
    got = reader.read()
    assert got == messages
    assert reader.reads > 1
    with pytest.raises(Closed):
        reader.read()


def test_bytes_read_before_the_peer_vanished_are_returned_first(pair):
    a, b = pair
    b.sendall(frame(b"one") + frame(b"two"))
    b.close()
    reader = FrameReader(FakeWs(a))
    assert read_all(reader, 2) == [b"one", b"two"]
    with pytest.raises(ConnectionResetError):
        reader.read()


def wait_for_bytes(tls, n, timeout=5.0):
    """Until the kernel holds at least ``n`` bytes for ``tls`` (its
    ciphertext is larger than the plaintext), without reading them."""
    import fcntl
    import termios
    import time
    deadline = time.monotonic() + timeout
    while True:
        waiting = struct.unpack("i", fcntl.ioctl(tls.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
        if waiting >= n:
            return
        assert time.monotonic() < deadline, f"only {waiting} of {n} bytes arrived"
        time.sleep(0.01)


def test_a_whole_text_frame_inside_a_fragmented_message_is_an_error(pair):
    a, b = pair
    b.sendall(frame(b"hel", fin=False) + frame(b"lo"))
    with pytest.raises(ProtocolError, match="inside a fragmented one"):
        FrameReader(FakeWs(a)).read()


def test_a_read_that_took_everything_leaves_later_frames_to_the_next(pair):
    """The drain looks (FIONREAD) before it reads on: a read that took
    everything is one recv, and what comes later is the next read's."""
    a, b = pair
    b.sendall(frame(b"one"))
    reader = FrameReader(FakeWs(a))
    assert read_all(reader, 1) == [b"one"] and reader.reads == 1
    b.sendall(frame(b"two") + frame(b"x" * 300))
    assert read_all(reader, 2) == [b"two", b"x" * 300]
