"""The files as the writer finds them at start: a torn last line cut (and the
rest of its unfinished depth event), and each stream's last id. Pure file
work, no process state."""

import logging
import os

from . import compression

log = logging.getLogger(__name__)


def repair_torn_line(fd, path, event_column=None):
    """Cut an unfinished last line (a crash mid-write); with
    ``event_column`` (depth: the final update id), also the complete rows
    before it that may belong to the same, unfinished event. Returns
    ``(bytes, rows)`` removed (rows: complete rows cut with the torn line)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return 0, 0
    keep = _line_start(fd, size)
    torn = os.pread(fd, size - keep, keep)
    rows = 0
    if event_column is not None and keep > 0:
        cells = torn.split(b",")
        event = cells[event_column] if len(cells) > event_column + 1 else None   # None: unknown event
        while keep > 0:
            start = _line_start(fd, keep - 1)
            row = os.pread(fd, keep - start, start).split(b",")
            if len(row) <= event_column or row[0].startswith(b"event_time") or \
                    (event is not None and row[event_column] != event):
                break
            event = row[event_column]       # unknown: the last complete event goes with it
            keep, rows = start, rows + 1
    os.ftruncate(fd, keep)
    log.warning("%s: cut a torn last line (%d bytes) left by a crash%s", path, size - keep,
                f", with the {rows} rows of its unfinished event" if rows else "")
    return size - keep, rows


def _line_start(fd, end):
    """Offset of the start of the line that ends at ``end`` (exclusive)."""
    pos = end
    while pos > 0:
        start = max(0, pos - 65536)
        chunk = os.pread(fd, pos - start, start)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        pos = start
    return 0


def last_row(path, column, backfilled_column=None):
    """``(id, line)`` of the row with the largest id in ``column``: the last
    row that was not backfilled (backfilled rows can follow later rows); its
    line's time begins the ledger row of a hole after it. None: no row.
    ``path``: the day's plain name; a compressed day is read through."""
    if compression.siblings(path)[1] is not None:
        return _last_row_streamed(path, column, backfilled_column)
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            span = 65536
            while True:
                start = max(0, size - span)
                f.seek(start)
                lines = f.read(size - start).split(b"\n")
                found = _qualifying(lines[1:], column, backfilled_column)   # [0]: partial, or the header
                if found is not None:
                    return found
                if start == 0:
                    return None
                span *= 16
    except OSError:
        return None


def _qualifying(lines, column, backfilled_column):
    """``(id, line)`` of the last of ``lines`` with an id that was not backfilled."""
    for line in reversed(lines):
        cells = line.split(b",")
        if len(cells) <= column or not cells[column].lstrip(b"-").isdigit():
            continue
        if backfilled_column is not None and cells[backfilled_column] == b"1":
            continue
        return int(cells[column]), line.decode(errors="replace")
    return None


def _last_row_streamed(path, column, backfilled_column):
    """last_row of a compressed day: one pass, a chunk of whole lines at a time."""
    found, carry = None, b""
    try:
        with compression.open_day(path) as f:
            while True:
                chunk = f.read(compression.CHUNK)
                if not chunk:
                    break
                data = carry + chunk
                cut = data.rfind(b"\n") + 1
                carry = data[cut:]
                found = _qualifying(data[:cut].split(b"\n"), column, backfilled_column) or found
    except OSError as exc:
        log.critical("%s: cannot read the compressed day to recover the last id (%s)", path, exc)
    return found


def _tail(path, span):
    """``(start, bytes)``: the last ``span`` bytes of the day (compressed or not)."""
    if compression.siblings(path)[1] is None:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            start = max(0, size - span)
            f.seek(start)
            return start, f.read(size - start)
    tail, total = b"", 0
    with compression.open_day(path) as f:
        while True:
            chunk = f.read(compression.CHUNK)
            if not chunk:
                break
            total += len(chunk)
            tail = (tail + chunk)[-span:]
    return total - len(tail), tail


def recent_keys(path, column, span=65536):
    """The keys in ``column`` of the rows in the last ``span`` bytes of the
    file (what a batch sent again could repeat), oldest first."""
    try:
        start, data = _tail(path, span)
        lines = data.split(b"\n")
    except OSError:
        return []
    keys = []
    lines = lines[:-1]          # after the last newline: empty, or an unfinished row that was never written whole
    for line in lines[1:] if start else lines:      # a partial first line, or the header
        cells = line.split(b",")
        if len(cells) > column and cells[column].isdigit():
            keys.append(int(cells[column]))
    return keys
