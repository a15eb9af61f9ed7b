"""Links between two processes: one Unix socket pair per pair of processes.

A link belongs to its two ends alone, so a process that dies (or hangs)
breaks only its own links; the manager gives its replacement new ones and
hands the other ends to the running peers (``Attach`` with the socket's
file descriptor, see messages.py).

Both ends are non-blocking: nothing ever waits on a peer. A message is a
frame (4-byte big-endian length, then a pickle); what the socket does not
take now stays in the sender's out-buffer and goes when the socket is
writable again. A receiver reads what is there and decodes whole frames.

:class:`Outbox` adds acknowledgements on top: the sender keeps every frame
until its consumer acknowledges it (``Ack(seq)``: on disk), and sends them
all again, in order, to the consumer's replacement. Its size in bytes is
what a producer checks to slow down (back-pressure) when its consumer does
not keep up.
"""

import array
import collections
import io
import logging
import logging.handlers
import os
import pickle
import select
import socket
import struct
import threading

log = logging.getLogger(__name__)

HEADER = struct.Struct("!I")
NO_LENGTH = bytes(HEADER.size)
READ_SIZE = 256 * 1024
MAX_FRAME = 256 * 1024 * 1024    # a length beyond this is a torn or foreign stream
MAX_FDS = 8


class Broken(Exception):
    """The link is closed, or what arrived on it cannot be decoded (``torn``)."""

    def __init__(self, why, torn=False):
        super().__init__(why)
        self.torn = torn


SOCKET_BUFFER = 4 * 1024 * 1024   # asked for; the kernel caps it at net.core.wmem_max


def pair():
    """Two connected ends: ``(a, b)`` sockets, to be wrapped in :class:`Link`.
    Each may hold a few batches unread, so that a send seldom leaves bytes
    waiting (each wait costs the sender a wake-up to send the rest)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for sock in (a, b):
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        except OSError:
            pass
    return a, b


def frame(msg):
    """``msg`` framed: its length, then its pickle, pickled in place after
    room for the length (a batch is megabytes: no second copy of it)."""
    out = io.BytesIO()
    out.write(NO_LENGTH)
    pickle.Pickler(out, pickle.HIGHEST_PROTOCOL).dump(msg)
    data = out.getbuffer()
    HEADER.pack_into(data, 0, len(data) - HEADER.size)
    return data


class Link:
    """One end of a link. ``send`` never blocks; ``receive`` returns the
    messages that have arrived (and the file descriptors that came with
    them, in ``fds``). Thread-safe for senders; one thread receives."""

    def __init__(self, sock, name="", on_pending=None):
        self.sock, self.name = sock, name
        sock.setblocking(False)
        self.lock = threading.Lock()
        self.out = collections.deque()      # [memoryview of what is left of a frame, sockets to pass or None]
        self.out_bytes = 0
        self.inbuf = bytearray()
        self.received = 0                   # bytes of the whole frames received so far
        self.fds = collections.deque()      # descriptors received, in the order they came
        self.closed = False
        self.ended = None                   # why the stream ended, once read; reported after its messages
        self.on_pending = on_pending        # called when a send leaves bytes behind (wake a flusher)

    def fileno(self):
        return self.sock.fileno()

    # -- sending ------------------------------------------------------------------------
    def send(self, msg, socks=None):
        """Send ``msg``; ``socks`` (sockets) go with it as descriptors, and
        are closed here once sent."""
        return self.send_frame(frame(msg), socks)

    def send_frame(self, data, socks=None):
        """Queue a ready frame and send what the socket takes now. False when
        the link is closed (the frame is dropped: an Outbox keeps its own copy)."""
        with self.lock:
            if self.closed:
                for s in socks or ():
                    s.close()
                return False
            self.out.append([memoryview(data), socks])
            self.out_bytes += len(data)
            self._flush()
            left = self.out_bytes
        if left and self.on_pending is not None:
            self.on_pending()
        return not self.closed

    def flush(self):
        """Send what is waiting; the bytes still waiting afterwards."""
        with self.lock:
            if not self.closed:
                self._flush()
            return self.out_bytes

    def _flush(self):
        out = self.out
        try:
            while out:
                item = out[0]
                view, socks = item
                if socks:
                    fds = array.array("i", [s.fileno() for s in socks])
                    sent = self.sock.sendmsg([view], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
                    for s in socks:         # the descriptors went with the first bytes
                        s.close()
                    item[1] = None
                else:
                    sent = self.sock.send(view)
                self.out_bytes -= sent
                if sent == len(view):
                    out.popleft()
                else:
                    item[0] = view[sent:]
                    return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close()

    @property
    def pending(self):
        return self.out_bytes

    # -- receiving ----------------------------------------------------------------------
    def receive(self):
        """Every whole message that has arrived. Raises :class:`Broken` at
        the end of the stream (after the messages before it were returned)
        or when a frame cannot be decoded."""
        if self.closed:
            raise Broken(f"{self.name}: closed")
        if self.ended is None:
            self.ended = self._read()
        messages = self._decode()
        if self.ended is not None and not messages:
            self.close()
            raise Broken(f"{self.name}: {self.ended}")
        return messages

    def _read(self):
        space = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(READ_SIZE, space, getattr(socket, "MSG_CMSG_CLOEXEC", 0))
            except (BlockingIOError, InterruptedError):
                return None
            except ConnectionResetError:        # closed with our messages unread: an end like any other
                return "the other end closed"
            except OSError as exc:
                return f"{type(exc).__name__}: {exc}"
            for level, kind, payload in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
                    self.fds.extend(fds)
            if not data:
                return "the other end closed"
            self.inbuf += data
            if len(data) < READ_SIZE:
                return None

    def _decode(self):
        buf, messages, pos = self.inbuf, [], 0
        while len(buf) - pos >= 4:
            (size,) = HEADER.unpack_from(buf, pos)
            if size > MAX_FRAME:
                self.close()
                raise Broken(f"{self.name}: a frame of {size} bytes; the stream is torn", torn=True)
            if len(buf) - pos - 4 < size:
                break
            try:
                messages.append(pickle.loads(memoryview(buf)[pos + 4:pos + 4 + size]))
            except Exception as exc:        # a frame torn by a peer killed mid-send, or a foreign writer
                self.close()
                raise Broken(f"{self.name}: a message does not decode ({type(exc).__name__}: {exc})",
                             torn=True) from None
            pos += 4 + size
        if pos:
            del buf[:pos]
            self.received += pos
        return messages

    def take_fd(self):
        """The next descriptor received (an ``Attach`` names what it is)."""
        if not self.fds:
            raise Broken(f"{self.name}: an Attach came without its descriptor")
        return self.fds.popleft()

    # -- closing ------------------------------------------------------------------------------
    def _close(self):
        self.closed = True
        for _, socks in self.out:
            for s in socks or ():
                s.close()
        self.out.clear()
        self.out_bytes = 0
        try:
            self.sock.close()
        except OSError:
            pass
        while self.fds:
            try:
                os.close(self.fds.popleft())
            except OSError:
                pass

    def close(self):
        """Close this end (any thread: senders hold the same lock)."""
        with self.lock:
            if not self.closed:
                self._close()

    def drain(self, deadline, clock):
        """Send everything waiting, waiting for the socket until ``deadline``
        (at exit: what a process hands on must leave before it does)."""
        while self.flush() and not self.closed:
            left = deadline - clock()
            if left <= 0:
                return False
            select.select([], [self.sock], [], min(left, 0.5))
        return not self.closed


def read(link, on_torn=None):
    """The messages waiting on ``link``; at its end the link is closed and []
    returned, and ``on_torn(peer, exc)`` hears of one that broke torn."""
    try:
        return link.receive()
    except Broken as exc:
        link.close()
        if on_torn is not None and exc.torn:
            on_torn(link.name, exc)
        return []


def from_fd(fd, name, on_pending=None):
    return Link(socket.socket(fileno=fd), name, on_pending)


class Outbox:
    """What a producer sent its consumer and the consumer has not yet
    acknowledged as written, in order, as frames ready to send again."""

    def __init__(self, limit):
        self.limit = limit
        self.frames = collections.deque()   # (seq, frame bytes)
        self.bytes = 0
        self.seq = 0
        self.lock = threading.Lock()
        self.room = threading.Condition(self.lock)      # notified when an Ack frees bytes

    def add(self, make):
        """Number the next message (``make(seq)`` builds it) and keep its frame."""
        with self.lock:
            self.seq += 1
            data = frame(make(self.seq))
            self.frames.append((self.seq, data))
            self.bytes += len(data)
            return data

    def ack(self, seq):
        with self.lock:
            frames = self.frames
            while frames and frames[0][0] <= seq:
                self.bytes -= len(frames.popleft()[1])
            self.room.notify_all()

    def all(self):
        with self.lock:
            return [data for _, data in self.frames]

    @property
    def full(self):
        return self.bytes >= self.limit

    def wait_room(self, timeout):
        """Wait until an Ack brings the bytes kept below the limit, at most
        ``timeout`` s; still full after?"""
        with self.lock:
            return not self.room.wait_for(lambda: self.bytes < self.limit, timeout)


class Producer:
    """A producer's side of a rows link: every Batch is numbered and kept
    (:class:`Outbox`) until acknowledged, and all that is kept is sent again,
    in order, when a new link to a restarted consumer is attached."""

    def __init__(self, limit, make, link=None):
        self.outbox = Outbox(limit)
        self.make = make                  # make(seq, items) -> the message
        self.link = link
        self.lock = threading.Lock()
        self.resent = 0                   # batches sent again to a new consumer

    def send(self, items):
        with self.lock:
            data = self.outbox.add(lambda seq: self.make(seq, items))
            if self.link is not None:
                self.link.send_frame(data)

    def attach(self, link):
        with self.lock:
            old, self.link = self.link, link
            if old is not None:
                old.close()
            frames = self.outbox.all()
            self.resent += len(frames)
            for data in frames:
                link.send_frame(data)
        return len(frames)

    def congested(self, wait=0.0):
        """Is the outbox full (the consumer is behind)? With ``wait``: after
        waiting up to that long for an Ack to make room."""
        return self.outbox.wait_room(wait) if wait and self.outbox.full else self.outbox.full


class Waker:
    """A pipe that wakes a thread waiting in :func:`wait` (give it as a
    reader): a link's ``on_pending``, when a send left bytes waiting."""

    closed = False

    def __init__(self):
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def __call__(self):
        try:
            os.write(self.w, b"x")
        except BlockingIOError:
            pass

    def fileno(self):
        return self.r

    def clear(self):
        try:
            os.read(self.r, 4096)
        except BlockingIOError:
            pass


def wait(readers, writers, timeout):
    """The links among ``readers`` with something to read (or their end) and
    the links among ``writers`` that can take more, within ``timeout`` s."""
    poller = select.poll()
    by_fd = {}
    for link in readers:
        if not link.closed:
            by_fd.setdefault(link.fileno(), [link, 0])[1] |= select.POLLIN
    for link in writers:
        if not link.closed:
            by_fd.setdefault(link.fileno(), [link, 0])[1] |= select.POLLOUT
    for fd, (_, mask) in by_fd.items():
        poller.register(fd, mask)
    ready_r, ready_w = [], []
    try:
        events = poller.poll(None if timeout is None else max(0, int(timeout * 1000)))
    except InterruptedError:
        return ready_r, ready_w
    for fd, event in events:
        link = by_fd[fd][0]
        if event & (select.POLLIN | select.POLLHUP | select.POLLERR | select.POLLNVAL):
            ready_r.append(link)
        if event & select.POLLOUT:
            ready_w.append(link)
    return ready_r, ready_w


class LinkLogHandler(logging.handlers.QueueHandler):
    """A child's log records, to the manager over its control link."""

    LIMIT = 1 << 20      # bytes waiting on the link beyond which records are dropped (and counted)

    def __init__(self, link, make):
        super().__init__(None)
        self.link, self.make = link, make
        self.dropped = 0

    def enqueue(self, record):
        if self.link.pending > self.LIMIT:
            self.dropped += 1       # the manager is not reading; logging must not grow without bound
            return
        self.link.send(self.make(record))
