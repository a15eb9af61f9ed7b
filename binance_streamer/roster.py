"""Who publishes what, as a sink worker sees it (pure: the clock is given).

Each collector's messages carry its process's pid and start time (in their
``Nats-Msg-Id``, cluster.message_id). Per collector and symbol, one process
publishes at a time: a restart replaces the old process for good. When
messages of a replaced process come again, two processes use one collector
id at once (their frames mix and their holes are misjudged): that is a
``DUPLICATE``, logged once. A collector that published
:class:`cluster.Stopped` for every symbol it had is ``stopped``; one that
sent nothing for ``silent`` seconds is ``silent``; a symbol no collector
sent anything of for ``silent`` seconds (since the sink started, or since
the last message) is unpublished.
"""

import logging

from . import cluster

log = logging.getLogger(__name__)

ACTIVE, STOPPED, SILENT, DUPLICATE = "active", "stopped", "silent", "DUPLICATE"


class Roster:
    def __init__(self, symbols, clock, silent):
        self.clock, self.silent = clock, silent
        now = clock()
        self.symbol_last = {s: now for s in symbols}   # symbol -> last message of any collector (or the start)
        self.boots = {}          # (collector, symbol) -> boot publishing now
        self.replaced = {}       # (collector, symbol) -> boots that were replaced
        self.stopped = {}        # collector -> symbols it stopped cleanly
        self.symbols = {}        # collector -> symbols it published
        self.duplicate = {}      # collector -> (when last seen, the two boots)

    def heard(self, collector, symbol, boot, stopped=False):
        """A message of ``collector`` about ``symbol`` from process ``boot``
        (None: unknown); returns the one ERROR line when a duplicate begins."""
        now = self.clock()
        if symbol in self.symbol_last and not stopped:
            self.symbol_last[symbol] = now
        self.symbols.setdefault(collector, set()).add(symbol)
        done = self.stopped.setdefault(collector, set())
        if stopped:
            done.add(symbol)
        else:
            done.discard(symbol)
        if boot is None:
            return None
        key = (collector, symbol)
        current = self.boots.get(key)
        self.boots[key] = boot
        if current is None or current == boot:
            return None
        old = self.replaced.setdefault(key, set())
        old.add(current)
        if boot not in old:          # a restart: the new process takes over
            return None
        began = collector not in self.duplicate or now - self.duplicate[collector][0] > self.silent
        self.duplicate[collector] = (now, sorted((current, boot)))
        if not began:
            return None
        return (f"sink: collector id {collector} is used by two processes at once "
                f"({' and '.join(map(cluster.describe_boot, sorted((current, boot))))}, both publishing {symbol}): "
                "their frames are mixed and their holes misjudged; give each collector its own collector_id")

    def state(self, collector, age):
        """The collector's state, given the age of its last message."""
        dup = self.duplicate.get(collector)
        if dup is not None and self.clock() - dup[0] <= self.silent:
            return DUPLICATE
        if self.symbols.get(collector) and self.stopped.get(collector) == self.symbols[collector]:
            return STOPPED
        return SILENT if age > self.silent else ACTIVE

    def duplicate_of(self, collector):
        dup = self.duplicate.get(collector)
        return None if dup is None else [cluster.describe_boot(b) for b in dup[1]]

    def unpublished(self):
        """``{symbol: seconds}`` of the symbols no collector published for ``silent`` seconds."""
        now = self.clock()
        return {s: round(now - t) for s, t in sorted(self.symbol_last.items()) if now - t > self.silent}
