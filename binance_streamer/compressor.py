"""The compressor: turns one closed day file into ``X.csv.gz`` / ``X.csv.zst``.

It runs as its own process (``python -m binance_streamer.compressor``) at
nice 19, one file per run, started by the writer (:class:`Compressions`),
which decides what is closed and never writes a file while it is being
compressed. At every instant the day's rows are in the plain file or in a
complete, verified compressed file:

1. compress the plain file (its rows only, when late rows are folded into an
   existing compressed file, whose bytes come first) into ``<target>.tmp``;
   fsync it;
2. verify: decompress the temporary file, compare length and SHA-256 with
   the plain file (after the old compressed content, when folding), and
   check that the plain file did not change meanwhile;
3. rename it to ``<target>``; fsync the directory;
4. remove the plain file; fsync the directory.

A run stopped anywhere (kill -9, power loss) is resolved by the next run on
the same file: the temporary file is removed; a compressed file whose plain
file still exists is checked again (:func:`compression.folded`): if it holds
the plain file's rows, the plain file is removed; if it does not decompress,
it is set aside as ``.damaged`` (CRITICAL) and the plain file compressed
afresh. The writer gives every plain file of a past day to a run at start.

Tests stop a run at a named step with ``--stop-at`` (``compressed``: before
the rename, ``renamed``: before the directory's fsync, ``unlinking``: before
the plain file's removal): the run writes the step's name to
``<plain>.step`` and waits to be killed.
"""

import argparse
import fcntl
import logging
import os
import subprocess
import sys
import time

from . import compression, csvfiles

log = logging.getLogger(__name__)

STEPS = ("compressed", "renamed", "unlinking")
NOTHING, DONE, FAILED = 3, 0, 1          # exit codes of a run
LOCK = "compress.lock"                   # in run_dir: one run at a time, even across writers


class VerifyError(OSError):
    pass


def _step(plain, name, stop_at):
    """A test's stop point: note the step reached, then wait to be killed."""
    if stop_at != name:
        return
    with open(plain + ".step", "w") as f:
        f.write(name)
    while True:
        time.sleep(3600)


def _fsync_dir(folder):
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pump(src, dst, digest, skip_header=False):
    """Copy ``src`` into ``dst`` in chunks, hashing what passes; returns bytes copied."""
    total = 0
    first = True
    while True:
        chunk = src.read(compression.CHUNK)
        if not chunk:
            return total
        if first and skip_header and not chunk[:1].isdigit():
            nl = chunk.find(b"\n")
            while nl < 0:                       # a header longer than a chunk (wide orderbook rows)
                more = src.read(compression.CHUNK)
                if not more:
                    return total
                chunk += more
                nl = chunk.find(b"\n")
            chunk = chunk[nl + 1:]
        first = False
        digest.update(chunk)
        dst.write(chunk)
        total += len(chunk)


def _digest_of(reader):
    import hashlib              # here: the writer imports this module for Compressions, and hashlib maps OpenSSL
    digest, total = hashlib.sha256(), 0
    while True:
        chunk = reader.read(compression.CHUNK)
        if not chunk:
            return total, digest.hexdigest()
        digest.update(chunk)
        total += len(chunk)


def resolve(plain):
    """Leftovers of a stopped run on ``plain``: temporary files removed, a
    compressed file checked against the plain file. Returns the compressed
    path to fold into (None: compress afresh) and whether the plain file is
    gone (nothing left to do)."""
    folder = os.path.dirname(plain)
    for suffix in csvfiles.COMPRESSED.values():
        tmp = plain + suffix + ".tmp"
        if os.path.exists(tmp):
            os.unlink(tmp)
            log.warning("%s: removed the temporary file of a stopped compression", tmp)
    _, packed = compression.siblings(plain)
    if packed is None or not os.path.exists(plain):
        return packed, not os.path.exists(plain)
    try:
        done = compression.folded(packed, plain)
    except OSError as exc:
        os.replace(packed, packed + ".damaged")
        _fsync_dir(folder)
        log.critical("%s: does not decompress (%s); set aside as .damaged, %s compressed afresh",
                     packed, exc, os.path.basename(plain))
        return None, False
    if done:
        os.unlink(plain)
        _fsync_dir(folder)
        log.warning("%s: a stopped compression had already written its rows to %s; removed",
                    plain, os.path.basename(packed))
        return packed, True
    return packed, False


def compress(plain, codec, level=None, stop_at=None):
    """One plain day file -> compressed, as the module's doc says. Returns
    the compressed path, or None when there was nothing to do."""
    packed, gone = resolve(plain)
    if gone:
        return packed
    if packed is not None:
        codec = csvfiles.codec_of(packed)       # late rows join the existing file, whatever its codec
    target = packed or csvfiles.compressed_name(plain, codec)
    tmp = target + ".tmp"
    folder = os.path.dirname(plain)
    import hashlib
    expect = hashlib.sha256()
    src = os.open(plain, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        before = os.fstat(src)
        with open(tmp, "wb") as out:
            length = 0
            if packed is not None:              # the old content first, byte for byte, and into the hash
                with open(packed, "rb") as old:
                    while chunk := old.read(compression.CHUNK):
                        out.write(chunk)
                with open(packed, "rb") as raw, compression.decompressing(codec, raw) as old:
                    length += _pump(old, _Null(), expect)
            with os.fdopen(os.dup(src), "rb") as reader, compression.compressing(codec, out, level) as z:
                length += _pump(reader, z, expect, skip_header=packed is not None)
            out.flush()
            os.fsync(out.fileno())
        with open(tmp, "rb") as raw, compression.decompressing(codec, raw) as check:
            got = _digest_of(check)
        after = os.fstat(src)
    finally:
        os.close(src)
    if got != (length, expect.hexdigest()) or (after.st_size, after.st_mtime_ns) != (before.st_size,
                                                                                      before.st_mtime_ns):
        os.unlink(tmp)
        raise VerifyError(f"{tmp}: does not decompress to {os.path.basename(plain)} "
                          f"({got[0]} bytes, {length} expected, or the plain file changed); not used")
    _step(plain, "compressed", stop_at)
    os.replace(tmp, target)
    _step(plain, "renamed", stop_at)
    _fsync_dir(folder)
    _step(plain, "unlinking", stop_at)
    os.unlink(plain)
    _fsync_dir(folder)
    return target


def _stopped_run(plain):
    """Did a run on ``plain`` stop before its end (a temporary or compressed file beside it)?"""
    return any(os.path.exists(plain + s) or os.path.exists(plain + s + ".tmp")
               for s in csvfiles.COMPRESSED.values())


def _said(run):
    """What an ended run wrote on stderr (a few lines), for the writer's log."""
    pipe = getattr(run, "stderr", None)
    if pipe is None:
        return ""
    try:
        return pipe.read(65536).decode(errors="replace").strip().replace("\n", "; ")
    except OSError:
        return ""
    finally:
        pipe.close()


class _Null:
    def write(self, data):
        return len(data)


def main(argv=None):
    """``python -m binance_streamer.compressor --codec gzip --lock FILE PLAIN``."""
    p = argparse.ArgumentParser(prog="binance_streamer.compressor")
    p.add_argument("--codec", choices=sorted(csvfiles.COMPRESSED), required=True)
    p.add_argument("--lock", help="file to hold an flock on while working (one run at a time)")
    p.add_argument("--level", type=int)
    p.add_argument("--stop-at", choices=STEPS, help="tests: stop at this step and wait to be killed")
    p.add_argument("plain")
    args = p.parse_args(argv)
    # to the writer, which logs these lines when the run ends
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
    os.nice(19)        # lowest CPU priority; the I/O priority of the best-effort class follows it
    lock = None
    if args.lock:
        lock = os.open(args.lock, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(lock, fcntl.LOCK_EX)        # a run of a writer that died may still be working
    if not os.path.exists(args.plain):
        resolve(args.plain)                     # a stray temporary file, if any
        return NOTHING
    try:
        t0, size = time.monotonic(), os.path.getsize(args.plain)
        target = compress(args.plain, args.codec, args.level, args.stop_at)
    except OSError as exc:
        log.error("%s: not compressed: %s", args.plain, exc)
        return FAILED
    if target is not None and os.path.exists(target):
        log.info("%s: %d bytes -> %d in %.1f s", os.path.basename(target), size, os.path.getsize(target),
                 time.monotonic() - t0)
    return DONE


class Compressions:
    """The writer's side: which closed files to compress, one run at a time.

    ``closed(path)`` names a plain file the writer will not write unless a
    late row comes (then it waits while the run lasts: ``busy``). Runs are
    started and reaped by ``tick()``, from the writer's housekeeping; it
    never waits for one."""

    RETRY = 300.0         # seconds before a file whose run failed is tried again

    def __init__(self, cfg, clock=time.time, start=None):
        self.cfg = cfg
        self.clock = clock
        self.queue = {}                 # plain path -> earliest time to try
        self.run = None                 # the running Popen
        self.busy = None                # the plain path it works on
        self.start = start or self._start
        self.done = self.failed = 0
        self.next_scan = 0.0
        self.stopped = False
        self.scanned = False            # the first scan (at start) resolves stopped runs at once

    def closed(self, path, at=None):
        self.queue.setdefault(path, at if at is not None else self.clock())

    def scan(self, today, open_paths):
        """Plain files of days before ``today`` not written for ``compress_after``."""
        now = self.clock()
        for _, _, day, path in csvfiles.day_files(self.cfg.data_dir, self.cfg.market, self.cfg.symbols):
            if csvfiles.codec_of(path) is not None or day >= today or path in open_paths:
                continue
            try:
                quiet = os.stat(path).st_mtime + self.cfg.compress_after
            except OSError:
                continue
            if not self.scanned and _stopped_run(path):
                quiet = now                 # at start: what a stopped run left is resolved at once
            self.closed(path, max(quiet, self.queue.get(path, 0.0)))
        self.scanned = True

    def tick(self, today, open_paths):
        """Reap a finished run; start the next due one. Returns the path of a
        run that just ended (its file may have changed), else None."""
        ended = None
        if self.stopped:
            return None
        if self.run is not None:
            code = self.run.poll()
            if code is None:
                return None
            said = _said(self.run)
            ended, self.run, self.busy = self.busy, None, None
            if code in (DONE, NOTHING):
                self.done += code == DONE
                if said:
                    log.info("compressor: %s", said)
            else:
                self.failed += 1
                log.warning("%s: compression failed (exit %s: %s); tried again in %.0f s", ended, code,
                            said or "no message", self.RETRY)
                self.queue[ended] = self.clock() + self.RETRY
        now = self.clock()
        if now >= self.next_scan:
            self.next_scan = now + max(60.0, self.cfg.compress_after / 2)
            self.scan(today, open_paths)
        for path, at in sorted(self.queue.items(), key=lambda kv: kv[1]):
            if at > now:
                break
            del self.queue[path]
            if path in open_paths:
                continue
            try:
                self.busy, self.run = path, self.start(path)
            except OSError as exc:          # no process to be had now (memory, process limit)
                self.busy = None
                self.failed += 1
                self.queue[path] = now + self.RETRY
                log.warning("%s: cannot start the compressor (%s); tried again in %.0f s", path, exc, self.RETRY)
            break
        return ended

    def _start(self, path):
        lock = os.path.join(self.cfg.run_dir, LOCK)
        return subprocess.Popen([sys.executable, "-m", "binance_streamer.compressor", "--codec",
                                 self.cfg.compression, "--lock", lock, path],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)

    def stop(self, timeout=5.0):
        """At the writer's stop: end a run (it is safe anywhere) and reap it."""
        self.stopped = True
        if self.run is None:
            return
        self.run.terminate()
        try:
            self.run.wait(timeout)
        except subprocess.TimeoutExpired:
            self.run.kill()
            self.run.wait()
        _said(self.run)
        self.run = self.busy = None

    def status(self):
        return {"compressed": self.done, "compress_failed": self.failed, "compress_waiting": len(self.queue),
                "compressing": os.path.basename(self.busy) if self.busy else None}


if __name__ == "__main__":
    sys.exit(main())
