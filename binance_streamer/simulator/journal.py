"""What the simulator really sent: every data frame, per connection, in order.

Modes: ``memory`` (tests read it in-process or over ``GET /sim/journal``),
``off`` (benchmarks), or a file path (one line per frame:
``<conn id> <send time us> <frame>``).
"""

class Journal:
    def __init__(self, mode="memory"):
        self.mode = mode
        self._entries = []
        self._file = None
        if mode not in ("memory", "off"):
            self._file = open(mode, "ab", buffering=1 << 20)

    @property
    def enabled(self):
        return self.mode != "off"

    def record(self, conn_id, send_us, frame):
        if self._file is not None:
            self._file.write(b"%d %d %s\n" % (conn_id, send_us, frame))
        elif self.mode == "memory":
            self._entries.append((conn_id, send_us, frame))

    def entries(self, conn_id=None):
        """``[(conn id, send time us, frame bytes)]``, oldest first."""
        if self._file is not None:
            self._file.flush()
            with open(self.mode, "rb") as f:
                rows = [_parse_line(line) for line in f if line.strip()]
        else:
            rows = list(self._entries)
        if conn_id is None:
            return rows
        return [r for r in rows if r[0] == conn_id]

    def close(self):
        if self._file is not None:
            self._file.close()
            self._file = None


def _parse_line(line):
    conn, send_us, frame = line.rstrip(b"\n").split(b" ", 2)
    return int(conn), int(send_us), frame
