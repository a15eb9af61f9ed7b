"""Reading WebSocket frames straight off the socket, many per read.

websocket-client opens the connection (TLS, proxies, the handshake) and
sends our few frames (pongs, close). Reading is done here: one read takes
everything the connection holds and every complete frame in it is returned
at once, with a handful of integer operations per frame instead of the
library's per-frame objects and two reads per frame. That is most of a
worker's cost per message, so it matters.

"Everything the connection holds" is more than one ``recv_into``: on an
``SSLSocket`` a ``recv_into`` returns at most one TLS record (16 KB of
plaintext at most, and a server writing message by message sends one record
per message), so after the first, blocking, read the socket is read again
without blocking until it has nothing more (or the buffer is full): when
the kernel or the TLS layer says bytes are waiting (FIONREAD, ``pending``),
else not at all, so the usual read does not end in a read that would block.

The common frame (FIN + TEXT, unmasked, a length that fits in 7 or 16
bits: every Binance message) takes a short path of a few operations; every
other frame, and every error, goes through ``_frame``.

Server frames are never masked (RFC 6455 section 5.1). Pings are answered
with a pong carrying the same payload, like websocket-client does; a close
frame is answered with a close and ends the stream.
"""

import fcntl
import socket
import ssl
import struct
import termios
import time

import websocket

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
MAX_MESSAGE = 16 * 2**20     # a frame announcing more than this is a protocol error
READ_SIZE = 262144
# A read that brought this much found a socket with a backlog (the kernel's
# buffer nearly full, the sender held back): read again at once instead of
# waiting out read_interval, which would cap a connection at a buffer per interval.
BUSY = READ_SIZE // 2


class ProtocolError(websocket.WebSocketException):
    pass


class Closed(websocket.WebSocketException):
    """The server closed the connection; ``code`` as it sent it (or None)."""

    def __init__(self, code):
        super().__init__(f"closed by the server (code {code})")
        self.code = code


class FrameReader:
    def __init__(self, ws):
        self.ws = ws
        self.sock = ws.sock
        self.chunk = bytearray(READ_SIZE)
        self.view = memoryview(self.chunk)
        self.buf = b""
        self.parts = None        # fragments of a message in progress
        self.close_code = False  # set when a close frame came: the next read raises Closed
        self.full = False        # the last read brought BUSY bytes or more: more is probably waiting
        self.error = None        # how the socket ended after the bytes of the last read: raised next
        self.reads = 0           # recv_into calls that returned data (several per read() over TLS)
        self.received = 0.0      # time.monotonic() of the last recv that returned bytes (before parsing them)

    def read(self, timeout=None):
        """Block for data (up to ``timeout`` seconds; None: the socket's own
        timeout), then take everything that is ready; the complete
        text/binary messages in it, in order.

        Raises socket.timeout on silence, Closed on the read after the
        server's close frame (the messages before it are returned first),
        ProtocolError on a malformed stream, ConnectionError/OSError when the
        connection breaks."""
        if self.close_code is not False:
            raise Closed(self.close_code)
        if self.error is not None:
            raise self.error
        sock = self.sock
        if timeout is not None:
            sock.settimeout(timeout)
        n = sock.recv_into(self.chunk)
        if n == 0:
            raise ConnectionResetError("connection closed without a close frame")
        self.received = time.monotonic()
        n = self._drain(n)
        self.full = n >= BUSY
        return self._messages(self.buf + self.view[:n] if self.buf else bytes(self.view[:n]))

    def _messages(self, buf):
        """The complete messages in ``buf``; an incomplete frame at its end
        is kept for the next read."""
        out = []
        append = out.append
        pos, size = 0, len(buf)
        last = size - 1                 # a header needs two bytes
        while pos < last:
            b1 = buf[pos + 1]
            if buf[pos] == 0x81 and self.parts is None:    # the common frame: FIN + TEXT, unmasked
                if b1 < 126:
                    start = pos + 2
                    end = start + b1
                    if end > size:
                        break
                    append(buf[start:end])
                    pos = end
                    continue
                if b1 == 126 and pos + 4 <= size:
                    start = pos + 4
                    end = start + ((buf[pos + 2] << 8) | buf[pos + 3])
                    if end > size:
                        break
                    append(buf[start:end])
                    pos = end
                    continue
            end = self._frame(buf, pos, size, out)
            if end is None:
                break
            pos = end
        self.buf = buf[pos:] if pos < size else b""
        return out

    def _frame(self, buf, pos, size, out):
        """Any frame at ``pos`` (what the fast path in ``read`` did not
        take): its payload handled, a message completed into ``out``;
        where the next frame starts (``size`` after a close frame: nothing
        may follow it), or None when the frame is not complete yet."""
        b0, b1 = buf[pos], buf[pos + 1]
        length, head = b1 & 0x7F, 2
        if length == 126:
            if size - pos < 4:
                return None
            length, head = (buf[pos + 2] << 8) | buf[pos + 3], 4
        elif length == 127:
            if size - pos < 10:
                return None
            length, head = int.from_bytes(buf[pos + 2:pos + 10], "big"), 10
            if length > MAX_MESSAGE:
                raise ProtocolError(f"frame of {length} bytes is larger than {MAX_MESSAGE}")
        if b1 & 0x80:
            raise ProtocolError("the server sent a masked frame")
        end = pos + head + length
        if end > size:
            return None
        payload = buf[pos + head:end]
        opcode = b0 & 0x0F
        if b0 & 0x70:
            raise ProtocolError("reserved bits set (no extension was negotiated)")
        if opcode == TEXT or opcode == BINARY:
            if self.parts is not None:
                raise ProtocolError("a new message started inside a fragmented one")
            if b0 & 0x80:
                out.append(payload)
            else:
                self.parts = [payload]
        elif opcode == CONT:
            if self.parts is None:
                raise ProtocolError("continuation frame without a message")
            self.parts.append(payload)
            if sum(map(len, self.parts)) > MAX_MESSAGE:
                raise ProtocolError(f"message larger than {MAX_MESSAGE} bytes")
            if b0 & 0x80:
                out.append(b"".join(self.parts))
                self.parts = None
        elif opcode == PING:
            if length > 125 or not b0 & 0x80:
                raise ProtocolError("invalid ping frame")
            self.ws.pong(payload)
        elif opcode == PONG:
            pass
        elif opcode == CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            try:
                self.ws.send_close()
            except (websocket.WebSocketException, OSError):
                pass
            return size          # nothing may follow a close frame
        else:
            raise ProtocolError(f"unknown opcode {opcode}")
        return end

    def _drain(self, n):
        """After a read of ``n`` bytes, read on without blocking until the
        socket (and, on TLS, the records it already holds) has nothing more
        or the buffer is full; the bytes now in the buffer. When nothing is
        waiting (the usual case once the first read took it all), that is
        one look, not a read that would block and its exceptions."""
        try:
            more = n < READ_SIZE and unread_bytes(self.sock) > 0
        except OSError:
            more = True                      # closed under us: the read says how
        if more:
            n = self._read_on(n)
        self.reads += 1
        return n

    def _read_on(self, n):
        sock, view = self.sock, self.view
        timeout = sock.gettimeout()
        sock.settimeout(0.0)
        try:
            while n < READ_SIZE:
                try:
                    got = sock.recv_into(view[n:])
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError, socket.timeout):
                    break
                except OSError as exc:      # the bytes already read still count; the error comes next time
                    self.error = exc
                    break
                if got == 0:
                    self.error = ConnectionResetError("connection closed without a close frame")
                    break
                n += got
                self.reads += 1
        finally:
            try:
                sock.settimeout(timeout)     # pongs and the close reply are sent blocking
            except OSError as exc:           # closed under us by another thread
                self.error = self.error or exc
        return n


def unread_bytes(sock):
    """Bytes waiting for the reader of ``sock``: in the kernel and, over
    TLS, received but not yet read (decrypted or not). Raises OSError when
    the socket is closed."""
    kernel = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    return kernel + sock.pending() if hasattr(sock, "pending") else kernel
