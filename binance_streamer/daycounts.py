"""What ``--daemon status`` calls "today": the rows and bytes of each
stream's newest day file and the gap-ledger rows of each symbol's newest
day, by stream and action, counted from the files themselves (when the
writer opens a file) and kept up to date as it writes. So a restart, a
second recorder run on the same day or a file deleted underneath never
make the status disagree with the disk."""

import csv
import io
import os

from .csvfiles import SCHEMAS

_GAP_STREAM = SCHEMAS["gaps"].index("stream")
_GAP_ACTION = SCHEMAS["gaps"].index("action")
_CHUNK = 8 << 20


def count_rows(fd):
    """Data rows in an open CSV file (its lines less the header)."""
    size, offset, lines = os.fstat(fd).st_size, 0, 0
    while offset < size:
        chunk = os.pread(fd, min(_CHUNK, size - offset), offset)
        if not chunk:
            break
        lines += chunk.count(b"\n")
        offset += len(chunk)
    return max(0, lines - 1)


def gap_counts(text, into):
    """Add the ledger rows in ``text`` (CSV lines, a header skipped) to ``into``:
    ``{stream: {action: rows}}``."""
    for row in csv.reader(io.StringIO(text)):
        if len(row) <= _GAP_ACTION or row[_GAP_STREAM] == "stream":
            continue
        by = into.setdefault(row[_GAP_STREAM], {})
        by[row[_GAP_ACTION]] = by.get(row[_GAP_ACTION], 0) + 1
    return into


class DayCounts:
    def __init__(self):
        self.files = {}     # (symbol, stream) -> [day, rows, bytes] of its newest day file
        self.gaps = {}      # symbol -> [day, {stream: {action: rows}}] of its newest ledger file

    def opened(self, symbol, stream, day, fd):
        """A file was opened (or reopened): count what it holds."""
        entry = self.files.get((symbol, stream))
        if entry is not None and entry[0] > day:
            return                       # a late row for an older day: today is a later file
        size = os.fstat(fd).st_size
        self.files[(symbol, stream)] = [day, count_rows(fd), size]
        if stream == "gaps":
            self.gaps[symbol] = [day, gap_counts(os.pread(fd, size, 0).decode(errors="replace"), {})]

    def written(self, symbol, stream, day, rows, size, text):
        """``rows`` lines (``text``) were appended; the file now has ``size`` bytes."""
        entry = self.files.get((symbol, stream))
        if entry is None or entry[0] != day:
            return
        entry[1] += rows
        entry[2] = size
        if stream == "gaps":
            gap_counts(text, self.gaps[symbol][1])

    def report(self):
        return ({f"{s}/{st}": {"day": str(v[0]), "rows": v[1], "bytes": v[2]} for (s, st), v in self.files.items()},
                {s: {"day": str(v[0]), "by_stream": v[1]} for s, v in self.gaps.items()})
