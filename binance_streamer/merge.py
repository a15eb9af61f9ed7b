"""``--merge DIR_A DIR_B --out DIR``: two recordings of the same symbols,
made by two recorders anywhere, into one with the union of their rows and a
gap ledger of only the holes both have. README "Merging two recordings" has
the rules; in short:

* streams with exchange ids (``streams.KINDS``): per symbol, stream and UTC
  day, every event once, in id order (mergerows.py); an event both have is
  A's row, unless only B received it live (A's was backfilled over REST);
  two copies whose exchange fields differ are counted and reported;
* snapshots and orderbook rows: mergefiles.py; other files without
  exchange ids (the REST series): a day is A's file where A has one, else B's;
* the ledger (mergeledger.py): a break in the merged rows (as ``--verify`` sees it) that a
  ledger row of A or B explains, or that lies outside the rows of both,
  becomes one row naming what each input knew; input rows whose hole the
  other input filled are dropped; rows not about a hole are copied; a day
  lacking a stream only one input records is ``not recorded``.

The inputs are only read; the output is plain CSV.
"""

import copy
import os
from dataclasses import dataclass, field

from . import compression, csvfiles, mergefiles, mergeledger, settings
from .mergerows import MergeError, Rows, Chain, Unsorted, in_order, pairs, read_events, sorted_events
from .mergeledger import SOURCES
from .streams import lookup

SHOWN = 5


@dataclass
class Summary:
    """What the merge did to one symbol's stream."""
    symbol: str
    stream: str
    days: int = 0
    a_only: int = 0           # events (files, for streams without ids) taken from A alone
    b_only: int = 0
    both: int = 0
    differ: list = field(default_factory=list)     # ids of events whose two copies differ
    repeated: int = 0         # events an input held twice (or in an earlier day's file)
    filled: int = 0           # input ledger holes the other input's rows filled
    left: int = 0             # holes in the output's ledger
    unexplained: int = 0      # breaks in the merged rows no input's ledger named
    keyed: bool = True        # False: files without exchange ids (orderbook rows, REST series days)
    unit: str = "day files"   # what a_only and b_only count when not keyed


class _State:
    """One stream's merge so far (copied before each day: a day read again starts from it)."""

    def __init__(self, chain):
        self.chain = chain
        self.counts = {"A": 0, "B": 0, "both": 0, "repeated": 0}
        self.differ = []
        self.runs = {"A": [], "B": []}      # [lo, hi, rows] of backfilled events kept, per input
        self.open_run = None                # the input whose backfilled run the last event continued
        self.ends = {"A": None, "B": None}  # [(first key, line), (last key, line)] of each input's events


def check_inputs(dir_a, dir_b, out):
    """The market folders to merge; MergeError (one line) when the inputs or ``out`` will not do."""
    for d in (dir_a, dir_b):
        if not os.path.isdir(d):
            raise MergeError(f"{d}: no such folder; pass the data_dir of each recorder")
    if os.path.samefile(dir_a, dir_b):
        raise MergeError(f"{dir_a} and {dir_b} are the same folder; pass two recordings")
    markets = [[m for m in settings.MARKETS if os.path.isdir(os.path.join(d, m))] for d in (dir_a, dir_b)]
    for d, found in zip((dir_a, dir_b), markets):
        if not found:
            raise MergeError(f"{d}: no recording in it (no {' or '.join(settings.MARKETS)} folder); "
                             f"pass the data_dir of each recorder")
    if markets[0] != markets[1]:
        raise MergeError(f"{dir_a} holds {' and '.join(markets[0])} but {dir_b} holds {' and '.join(markets[1])}: "
                         f"only recordings of the same market can be merged")
    real = os.path.realpath(out)
    for d in (dir_a, dir_b):
        if real == os.path.realpath(d) or real.startswith(os.path.realpath(d) + os.sep):
            raise MergeError(f"--out {out} is inside the input {d}; the inputs are never written to: "
                             f"choose a folder outside them")
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise MergeError(f"--out {out} exists and is not an empty folder; give a new or empty folder "
                         f"(a merge never overwrites)")
    return markets[0]


def merge(dir_a, dir_b, out):
    """Merge the recordings; returns [:class:`Summary`] per market, symbol and stream."""
    markets = check_inputs(dir_a, dir_b, out)
    names = {"A": dir_a, "B": dir_b}
    summaries = []
    for market in markets:
        files = {src: _files(names[src], market) for src in SOURCES}
        for symbol in sorted(set(files["A"]) | set(files["B"])):
            summaries += _symbol(market, symbol, {src: files[src].get(symbol, {}) for src in SOURCES}, names, out)
    return summaries


def _files(data_dir, market):
    """{symbol: {stream: {day: path}}}; a day with a compressed and a plain file is one day (open_day reads both)."""
    out = {}
    for symbol, stream, day, path in csvfiles.day_files(data_dir, market):
        out.setdefault(symbol, {}).setdefault(stream, {}).setdefault(day, path)
    return out


def _symbol(market, symbol, files, names, out):
    ledgers = {src: mergeledger.read_ledger(files[src].get("gaps", {}), src) for src in SOURCES}
    folder = os.path.join(out, market, symbol)
    os.makedirs(folder, exist_ok=True)
    summaries, ledger_out, taken = [], [], {}
    streams = sorted((set(files["A"]) | set(files["B"])) - {"gaps"})
    for stream in streams:
        by_src = {src: files[src].get(stream, {}) for src in SOURCES}
        summary = Summary(symbol, stream, days=len(set(by_src["A"]) | set(by_src["B"])))
        target_of = lambda day, stream=stream: _target(folder, market, symbol, stream, day)   # noqa: E731
        if stream == "depthSnapshot":
            mergefiles.snapshots(by_src, target_of, summary)
        elif stream == "orderbook" and mergefiles.orderbook(by_src, ledgers["A"], target_of, summary):
            taken[stream] = {day: "A" if day in by_src["A"] else "B" for day in set(by_src["A"]) | set(by_src["B"])}
        elif lookup(stream) is None:
            taken[stream] = _take_files(market, symbol, stream, by_src, folder, summary)
        else:
            state = _merge_stream(market, symbol, stream, by_src, folder, summary)
            ledger_out += mergeledger.stream_ledger(market, stream, state, ledgers, names, summary)
        summaries.append(summary)
    ledger_out += mergeledger.other_rows(streams, ledgers, names, taken)
    ledger_out += mergeledger.not_in_one(_files(out, market).get(symbol, {}), files, names, ledger_out)
    mergeledger.write_ledger(lambda day: _target(folder, market, symbol, "gaps", day), ledger_out)
    return summaries


# -- rows -------------------------------------------------------------------------------

def _target(folder, market, symbol, stream, day):
    return os.path.join(folder, os.path.basename(csvfiles.path("", market, symbol, stream, day)))


def _header(path):
    """The header line of a day file; a file with none (a crash left it empty) gets the schema's."""
    with compression.open_day(path) as f:
        line = f.readline()
    if not line.strip():
        name = csvfiles.parse_name(os.path.basename(path))
        market = os.path.basename(os.path.dirname(os.path.dirname(path)))
        return csvfiles.header(market, name[1])
    return line if line.endswith(b"\n") else line + b"\n"


def _merge_stream(market, symbol, stream, by_src, folder, summary):
    kind = lookup(stream)
    header = None
    state = None
    for day in sorted(set(by_src["A"]) | set(by_src["B"])):
        paths = {src: by_src[src].get(day) for src in SOURCES}
        for src, path in paths.items():
            if path is not None and header is None:
                header = _header(path)
                columns = header.decode().strip().split(",")
                if kind.id_column not in columns:
                    raise MergeError(f"{path}: no {kind.id_column} column in its header; is it a {stream} file?")
                rows = Rows(columns)
                state = _State(Chain(market, stream, columns))
            elif path is not None and _header(path) != header:
                raise MergeError(f"{path}: its columns differ from the other {stream} files' "
                                 f"({header.strip().decode()}); only recordings of the same market and version "
                                 f"can be merged")
        unsorted = set()
        while True:
            saved = copy.deepcopy(state)
            try:
                _merge_day(paths, columns.index(kind.id_column), kind.per_level, unsorted, rows, state, header,
                           _target(folder, market, symbol, stream, day))
                break
            except Unsorted as exc:
                unsorted.add(exc.args[0])
                state = saved
    summary.a_only, summary.b_only, summary.both = state.counts["A"], state.counts["B"], state.counts["both"]
    summary.repeated, summary.differ = state.counts["repeated"], state.differ
    return state


def _events(path, src, id_index, per_level, unsorted, counts):
    if path is None:
        return iter(())
    read = lambda: read_events(path, id_index, per_level)      # noqa: E731
    return sorted_events(read, counts) if src in unsorted else in_order(read(), src)


def _merge_day(paths, id_index, per_level, unsorted, rows, state, header, target):
    counts, chain = state.counts, state.chain
    partial = target + ".partial"
    with open(partial, "wb") as out:
        out.write(header)
        streams = [_events(paths[src], src, id_index, per_level, unsorted, counts) for src in SOURCES]
        for key, a, b in pairs(*streams):
            for src, lines in (("A", a), ("B", b)):
                if lines is not None:
                    ends = state.ends[src]
                    state.ends[src] = [ends[0] if ends else (key, lines[0]), (key, lines[-1])]
            if chain.last_key is not None and key <= chain.last_key:
                counts["repeated"] += 1            # in an earlier day's file already
                continue
            if a is not None and b is not None:
                counts["both"] += 1
                if not rows.same(a, b):
                    state.differ.append(key)
                src, lines = rows.choose(a, b)
            else:
                src, lines = ("A", a) if a is not None else ("B", b)
                counts[src] += 1
            _note_backfill(state, src, key, rows.is_backfilled(lines))
            chain.feed(key, lines)
            out.write(b"".join(lines))
    os.replace(partial, target)


def _note_backfill(state, src, key, backfilled):
    """Runs of backfilled events kept from each input: the ledger rows that name them are copied."""
    if not backfilled:
        state.open_run = None
        return
    runs = state.runs[src]
    if state.open_run == src:
        runs[-1][1], runs[-1][2] = key, runs[-1][2] + 1
    else:
        runs.append([key, key, 1])
    state.open_run = src


def _take_files(market, symbol, stream, by_src, folder, summary):
    """Files without exchange ids: each day A's file where A has one, else B's; {day: input}."""
    summary.keyed = False
    taken = {}
    for day in sorted(set(by_src["A"]) | set(by_src["B"])):
        src = "A" if day in by_src["A"] else "B"
        taken[day] = src
        summary.a_only += src == "A"
        summary.b_only += src == "B"
        target = _target(folder, market, symbol, stream, day)
        with compression.open_day(by_src[src][day]) as f, open(target + ".partial", "wb") as out:
            for chunk in iter(lambda: f.read(compression.CHUNK), b""):
                out.write(chunk)
        os.replace(target + ".partial", target)
    return taken


# -- the summary ------------------------------------------------------------------------

def format_summary(summaries, names):
    w = max([15] + [len(s.stream) + 2 for s in summaries])     # USD-M's REST series are up to 30 characters
    lines = [f"A = {names['A']}", f"B = {names['B']}", "",
             f"{'symbol':<12}{'stream':<{w}}{'days':>5}{'A only':>10}{'B only':>10}{'both':>10}{'differ':>8}"
             f"{'holes filled':>14}{'holes left':>12}"]
    for s in summaries:
        if not s.keyed:
            lines.append(f"{s.symbol:<12}{s.stream:<{w}}{s.days:>5}  no exchange ids: {s.a_only} {s.unit} from A, "
                         f"{s.b_only} from B")
            continue
        lines.append(f"{s.symbol:<12}{s.stream:<{w}}{s.days:>5}{s.a_only:>10}{s.b_only:>10}{s.both:>10}"
                     f"{len(s.differ):>8}{s.filled:>14}{s.left:>12}")
    for s in summaries:
        if s.differ:
            lines.append(f"{s.symbol} {s.stream}: {len(s.differ)} events differ between A and B (A's rows kept), "
                         f"ids {', '.join(map(str, s.differ[:SHOWN]))}{' ...' if len(s.differ) > SHOWN else ''}")
        if s.unexplained:
            lines.append(f"{s.symbol} {s.stream}: {s.unexplained} breaks in the merged rows that neither ledger "
                         f"names (run --verify on each input)")
        if s.repeated:
            lines.append(f"{s.symbol} {s.stream}: {s.repeated} events held twice by one input, written once")
    return "\n".join(lines)
