"""Retention: day files older than ``retention_days`` leave data_dir.

A day D expires when D < today (UTC) - ``retention_days``: with
``retention_days: 30`` on 2026-12-04 the files of 2026-11-03 and before go,
the 30 days from 2026-11-04 and today stay. So the writer never loses a
file it writes: it writes today's files, and yesterday's around midnight.
Expired files are removed, or moved to ``archive_dir`` under the same
``<market>/<SYMBOL>/`` folders, oldest day first, with one log line per
day. A day's data is any of its names: ``.csv``, ``.csv.gz`` or ``.csv.zst``.

The writer runs :class:`Keeper` in a thread of its own (a move to another
disk may take long, and the writer's loop must keep turning): once at start,
then every hour. It is told which files the writer has open, and leaves
them (a backfill of an old day, rare).
"""

import errno
import logging
import os
import shutil
import threading
import time

from . import csvfiles

log = logging.getLogger(__name__)

INTERVAL = 3600.0          # seconds between two sweeps


def first_kept_day(now, retention_days):
    """The oldest day kept (``YYYY-MM-DD``): ``now`` (seconds) is today."""
    today = int(now // 86_400)
    return time.strftime("%Y-%m-%d", time.gmtime((today - retention_days) * 86_400))


def expired(data_dir, market, keep_from):
    """``{day: [(key, path)]}`` of the day files before ``keep_from``, where
    ``key`` is ``(symbol, stream, day)``."""
    found = {}
    for symbol, stream, day, path in csvfiles.day_files(data_dir, market):
        if day < keep_from:
            found.setdefault(day, []).append(((symbol, stream, day), path))
    return found


def sweep(data_dir, market, now, retention_days, archive_dir=None, busy=frozenset()):
    """Remove (or move to ``archive_dir``) every expired day file, oldest day
    first, except those in ``busy`` (keys the writer has open); returns
    ``[(day, files, bytes)]`` of the days done."""
    done = []
    for day, files in sorted(expired(data_dir, market, first_kept_day(now, retention_days)).items()):
        count = size = 0
        for key, path in files:
            if key in busy:
                continue
            try:
                nbytes = os.stat(path, follow_symlinks=False).st_size
                if archive_dir:
                    _move(path, os.path.join(archive_dir, os.path.relpath(path, data_dir)))
                else:
                    os.unlink(path)
            except OSError as exc:
                log.warning("retention: %s stays (%s)", path, exc.strerror or exc)
                continue
            count, size = count + 1, size + nbytes
        if count:
            done.append((day, count, size))
            log.info("retention: %s %s: %d files, %.1f MB (retention_days %d)", day,
                     f"moved to {archive_dir}" if archive_dir else "removed", count, size / 1e6, retention_days)
    return done


def _move(src, dst):
    """Move one file, never over one already there; across disks by a copy
    under a temporary name, so the archive never holds half a file."""
    if os.path.lexists(dst):
        raise OSError(errno.EEXIST, f"{dst} already exists in archive_dir")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    try:
        os.rename(src, dst)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    tmp = dst + ".part"
    shutil.copy2(src, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, dst)
    os.unlink(src)


class Keeper:
    """Runs :func:`sweep` at start and every ``INTERVAL`` in a thread;
    does nothing when ``retention_days`` is 0."""

    def __init__(self, cfg, busy=frozenset, clock=time.time, interval=INTERVAL):
        self.cfg, self.busy, self.clock, self.interval = cfg, busy, clock, interval
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        if self.cfg.retention_days:
            self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
            self._thread.start()
        return self

    def _run(self):
        while True:
            try:
                sweep(self.cfg.data_dir, self.cfg.market, self.clock(), self.cfg.retention_days,
                      self.cfg.archive_dir, self.busy())
            except Exception:            # never the writer's end: logged, tried again next time
                log.exception("retention: the sweep failed; trying again in %.0f s", self.interval)
            if self._stop.wait(self.interval):
                return

    def stop(self, timeout=5.0):
        """At the writer's stop; a move in progress finishes or is abandoned
        (its ``.part`` file is replaced by the next sweep's)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
