"""``--verify`` of the REST series (series.py): each file's rows one period
apart (fundingRate: on the 8-hour grid of 00:00, 08:00 and 16:00 UTC, a few
ms late at most), no time twice, and every break matched to a gap-ledger
row. ``openInterest`` is a sample series: its spacing is whatever the polls
were, so only repeats are checked."""

import numpy as np

from .. import csvfiles, series
from ..binance.endpoints import FUNDING_INTERVAL_MS


def time_column(stream):
    """The exchange-time column of a series' file; None for other files."""
    name = csvfiles.series_kind(stream)
    return csvfiles.SERIES_SCHEMAS[name][0] if name else None


def check(fr, df, stream, ledger, previous):
    """Problems (``what`` texts) of one day file of a series; ``previous``:
    the last time of the day file before it (None: none). Sets the file
    report's ids (the series' times), breaks and explained breaks."""
    name = csvfiles.series_kind(stream)
    times = np.sort(df[time_column(stream)].astype("int64").to_numpy())
    problems = []
    repeats = int(np.sum(np.diff(times) == 0))
    if repeats:
        problems.append(f"{repeats} times recorded twice")
        times = np.unique(times)
    if len(times):
        fr.first_id, fr.last_id = int(times[0]), int(times[-1])
    step = series.step_ms(name, stream.partition("_")[2] or series.DEFAULT_PERIOD)
    if step is None:
        return problems
    if name == "fundingRate":
        late = times[times % FUNDING_INTERVAL_MS > FUNDING_INTERVAL_MS // 100]
        if len(late):
            problems.append(f"{len(late)} funding times off the 8-hour grid, e.g. {int(late[0])}")
    gaps = np.diff(times)
    tight = gaps[gaps < step - step // 100]
    if len(tight):
        problems.append(f"{len(tight)} rows closer than the series' period ({step} ms)")
    holes = [(int(times[i]), int(times[i + 1])) for i in np.nonzero(gaps > step + step // 100)[0]]
    if previous is not None and len(times) and not series.spacing_ok(step, previous, int(times[0])):
        holes.insert(0, (previous, int(times[0])))
    fr.breaks = len(holes)
    for before, after in holes:
        if ledger.explains(stream, before, after):
            fr.explained += 1
        else:
            problems.append(f"hole between times {before} and {after} not in the gap ledger")
    return problems
