"""TLS for the WebSocket connections through memory buffers: many records per read.

An ``ssl.SSLSocket`` lets OpenSSL read the socket itself, record by record:
a read returns one TLS record, and each record costs two ``recv`` calls (its
header, then its body). Binance writes one record per message, and most
messages are small bookTickers, so on real traffic that was a sixth of a
worker's CPU. :class:`TLSSocket` reads the plain socket itself, as much as
the kernel holds (``READ_SIZE``) in one call, feeds it to an
``ssl.SSLObject`` through a ``MemoryBIO`` and decrypts every complete record
in it in one ``recv_into``.

It stands in for the ``SSLSocket`` websocket-client would make:
:class:`Context` is the ``SSLContext`` passed in ``sslopt["context"]``, and
its ``wrap_socket`` returns a :class:`TLSSocket` (after the handshake, which
websocket-client then follows with its HTTP upgrade, through a proxy tunnel
too). Certificates and host names are checked as before (``context``).
"""

import functools
import ssl
import threading

READ_SIZE = 262144


class Context(ssl.SSLContext):
    """An ``SSLContext`` whose sockets are :class:`TLSSocket`."""

    def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True, suppress_ragged_eofs=True,
                    server_hostname=None, session=None):
        return TLSSocket(self, sock, server_hostname, do_handshake_on_connect)


@functools.lru_cache(maxsize=4)
def client_context(ca_file=None):
    """A verifying client context: ``ca_file``'s authorities, or the system's
    (made once per process: loading them costs milliseconds)."""
    ctx = Context(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return ctx


class TLSSocket:
    """A connected socket with TLS, read many records at a time. Its methods
    are the ones websocket-client and frames.FrameReader use, with the
    ``SSLSocket`` behaviour they expect: a read that would block raises
    ``ssl.SSLWantReadError``, a closed connection reads as 0 bytes. One
    thread reads; pongs and close frames may be sent from another (``_lock``
    guards the TLS state, ``_send_lock`` keeps records in order on the wire)."""

    def __init__(self, context, sock, server_hostname=None, do_handshake=True):
        self._sock = sock
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._in, self._out, server_hostname=server_hostname)
        self._read = getattr(self._tls, "_sslobj", self._tls).read    # read(len, buffer) either way
        self._lock, self._send_lock = threading.Lock(), threading.Lock()
        self._chunk = bytearray(READ_SIZE)       # read into, never allocated per read (256 KB would be an mmap)
        self._view = memoryview(self._chunk)
        if do_handshake:
            self.do_handshake()

    def do_handshake(self):
        while True:
            try:
                with self._lock:
                    self._tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                if not self._fill():
                    raise ConnectionResetError("the connection closed during the TLS handshake")
                continue
            self._flush()
            return

    def _fill(self):
        """One read of the plain socket into the TLS input (blocking as its
        timeout says); the bytes read, 0 at the end of the connection."""
        n = self._sock.recv_into(self._chunk)
        if n:
            self._in.write(self._view[:n])
        else:
            self._in.write_eof()
        return n

    def _flush(self):
        with self._send_lock:
            with self._lock:
                data = self._out.read() if self._out.pending else b""
            if data:
                self._sock.sendall(data)

    def recv_into(self, buffer, nbytes=0):
        """Every decrypted byte ready (up to ``nbytes``): the socket is read
        only when none is, and then once.

        Each record is its own ``read`` (OpenSSL returns one at a time), so
        the loop over them is kept small: the lock is taken once for all the
        records ready, and the C object's ``read`` is called directly (the
        ``SSLObject.read`` around it is one more Python call per record)."""
        view = memoryview(buffer)
        if nbytes and nbytes < len(view):
            view = view[:nbytes]
        size, got = len(view), 0
        read = self._read
        while True:
            want = False
            with self._lock:
                try:
                    while got < size:
                        n = read(size, view[got:])     # at most one record; len is capped at the view's
                        if not n:
                            break                      # the peer's close_notify
                        got += n
                except ssl.SSLWantReadError:
                    want = True
                except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                    pass
            if got or not want:
                break
            try:
                self._fill()                       # at the end of the connection, the next read says how it ended
            except BlockingIOError:
                raise ssl.SSLWantReadError("the read would block") from None
        if self._out.pending:              # TLS 1.3 may answer a record (key update)
            self._flush()
        return got

    def recv(self, bufsize, flags=0):
        buf = bytearray(bufsize)
        n = self.recv_into(buf)
        return bytes(buf[:n])

    def send(self, data, flags=0):
        with self._send_lock:
            with self._lock:
                self._tls.write(data)
                out = self._out.read()
            self._sock.sendall(out)
        return len(data)

    def sendall(self, data, flags=0):
        self.send(data)

    def pending(self):
        """Bytes received but not yet read: decrypted, or waiting to be."""
        return self._tls.pending() + self._in.pending

    def fileno(self):
        return self._sock.fileno()

    def gettimeout(self):
        return self._sock.gettimeout()

    def settimeout(self, timeout):
        self._sock.settimeout(timeout)

    def setblocking(self, flag):
        self._sock.setblocking(flag)

    def setsockopt(self, *args):
        self._sock.setsockopt(*args)

    def getpeername(self):
        return self._sock.getpeername()

    def shutdown(self, how):
        self._sock.shutdown(how)

    def close(self):
        self._sock.close()
