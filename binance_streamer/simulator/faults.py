"""Faults on demand: the same keys at start (``--fault key=value``) and at run
time (``POST /sim/faults`` with a JSON object)."""

FAULTS = {
    "drop": ("str", "close every connection now: 'close' sends a close frame, 'abort' cuts TCP"),
    "drop_conn": ("int", "close only this connection id now (with drop: the way drop says; alone: a close frame)"),
    "drop_every": ("float", "seconds between closing every connection (0: off)"),
    "stall": ("float", "seconds during which connections get no data, no pings and no pongs"),
    "stall_conn": ("int", "with stall: only this connection id (default: all)"),
    "no_pong": ("bool", "stop answering the client's pings"),
    "malformed": ("int", "send this many malformed (non-JSON) frames to every connection now"),
    "malformed_every": ("float", "seconds between malformed frames (0: off)"),
    "unknown_event": ("int", "send this many events of an unknown type to every connection now"),
    "unknown_every": ("float", "seconds between unknown events (0: off)"),
    "rest_429": ("float", "seconds during which every REST request gets HTTP 429"),
    "rest_418": ("float", "seconds during which every REST request gets HTTP 418"),
    "depth_delay": ("float", "seconds each depth snapshot is delayed"),
    "depth_fail": ("int", "the next N depth snapshots fail with HTTP 503"),
    "shutdown": ("float", "send serverShutdown now and close every connection this many seconds later"),
    "lifetime": ("float", "maximum connection lifetime in seconds"),
    "mutate_every": ("int", "every Nth data frame sent gets one hostile value, a field removed or its bytes cut "
                            "(seeded; 0: off)"),
    "unreachable": ("float", "seconds during which the exchange cannot be reached: every connection is cut now, "
                             "new connections and REST requests are cut before any answer"),
    "series_down": ("float", "seconds during which the REST series (usdm: openInterest, /futures/data/*, fundingRate) "
                             "answer HTTP 503"),
    "series_clock": ("float", "move the REST series' clock forward by this many seconds (adds up; their rows up to "
                              "the new time appear at once)"),
    "rest_garbage": ("int", "the next N REST answers are HTTP 200 but not the JSON asked for (HTML, cut JSON, "
                            "a list, the wrong shape)"),
}

_TYPES = {"float": float, "int": int, "str": str}


class FaultError(ValueError):
    pass


def coerce(key, value):
    """Check one fault setting; strings from the command line are converted."""
    if key not in FAULTS:
        raise FaultError(f"unknown fault {key!r}; known: {', '.join(sorted(FAULTS))}")
    kind = FAULTS[key][0]
    if kind == "bool":
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise FaultError(f"fault {key!r} takes true or false, not {value!r}")
            return value.lower() in ("true", "1", "yes")
        return bool(value)
    if kind == "str":
        if value not in ("close", "abort"):
            raise FaultError(f"fault {key!r} takes 'close' or 'abort', not {value!r}")
        return value
    try:
        number = _TYPES[kind](value)
    except (TypeError, ValueError):
        raise FaultError(f"fault {key!r} takes a number, not {value!r}") from None
    if number < 0:
        raise FaultError(f"fault {key!r} must not be negative")
    return number


def parse_cli(items):
    """``["stall=5", "no_pong=true"]`` -> checked dict."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise FaultError(f"fault {item!r} must look like key=value")
        out[key.strip()] = coerce(key.strip(), value.strip())
    check_together(out)
    return out


def check_together(checked):
    """Settings that only mean something with another one."""
    if "stall_conn" in checked and "stall" not in checked:
        raise FaultError("fault stall_conn only with stall: it names the connection a stall stops; "
                         "give stall=SECONDS too (e.g. stall=5 stall_conn=3)")


class Faults:
    """Standing fault settings; one-shot actions are returned to the caller."""

    ONE_SHOT = ("drop", "malformed", "unknown_event", "shutdown")

    def __init__(self):
        self.drop_every = 0.0
        self.malformed_every = 0.0
        self.unknown_every = 0.0
        self.stall_until = 0.0
        self.stall_conn = None
        self.no_pong = False
        self.rest_429_until = 0.0
        self.rest_418_until = 0.0
        self.unreachable_until = 0.0
        self.depth_delay = 0.0
        self.depth_fail = 0
        self.lifetime = None
        self.mutate_every = 0
        self.rest_garbage = 0
        self.series_down_until = 0.0
        self.series_clock = 0.0           # seconds the REST series' clock is ahead of real time

    def apply(self, spec, now):
        """Apply a dict of fault settings; returns the one-shot actions [(key, value)]."""
        checked = {k: coerce(k, v) for k, v in spec.items()}
        check_together(checked)
        actions = []
        for key, value in checked.items():
            if key == "drop" and "drop_conn" in checked:
                actions.append(("drop_conn", (value, checked["drop_conn"])))
            elif key == "drop_conn" and "drop" not in checked:
                actions.append(("drop_conn", ("close", value)))
            elif key in self.ONE_SHOT:
                actions.append((key, value))
            elif key == "stall":
                self.stall_until = now + value
                self.stall_conn = checked.get("stall_conn")
            elif key in ("stall_conn", "drop_conn"):       # read with stall / drop above
                continue
            elif key in ("rest_429", "rest_418"):
                setattr(self, key + "_until", now + value)
            elif key == "series_down":
                self.series_down_until = now + value
            elif key == "series_clock":
                self.series_clock += value
            elif key == "unreachable":
                self.unreachable_until = now + value
                actions.append(("drop", "abort"))
            else:
                setattr(self, key, value)
        return actions

    def stalled(self, conn_id, now):
        return now < self.stall_until and self.stall_conn in (None, conn_id)

    def as_dict(self, now):
        return {
            "drop_every": self.drop_every,
            "malformed_every": self.malformed_every,
            "unknown_every": self.unknown_every,
            "stall_remaining": max(0.0, self.stall_until - now),
            "stall_conn": self.stall_conn,
            "no_pong": self.no_pong,
            "rest_429_remaining": max(0.0, self.rest_429_until - now),
            "rest_418_remaining": max(0.0, self.rest_418_until - now),
            "unreachable_remaining": max(0.0, self.unreachable_until - now),
            "depth_delay": self.depth_delay,
            "depth_fail": self.depth_fail,
            "lifetime": self.lifetime,
            "mutate_every": self.mutate_every,
            "rest_garbage": self.rest_garbage,
            "series_down_remaining": max(0.0, self.series_down_until - now),
            "series_clock": self.series_clock,
        }
