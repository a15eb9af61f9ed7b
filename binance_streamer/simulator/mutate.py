"""Hostile versions of real frames and REST answers, for the fuzz tests and
the simulator's ``mutate_every`` and ``rest_garbage`` faults. Pure: the
caller passes the random generator (seeded, so a failure reproduces)."""

import json

import orjson

# Values no Binance field ever has, and some that a careless parser accepts.
HOSTILE = ["abc", "", None, [], {}, -1, 1.5, "1e5", "-0.5", "9" * 60, True, "NaN", "Infinity", "1.2.3",
           " 1.0", "１２", 2**70, {"nested": [1, 2]}, "\u0000", "0x10"]


def mutate(payload, rng):
    """A copy of one event's JSON ``payload`` (bytes) with one thing wrong:
    a field replaced by a hostile value, a field removed, a price level
    broken, or the bytes cut short."""
    how = rng.randrange(5)
    if how == 0:
        return payload[:rng.randrange(1, max(2, len(payload) - 1))]          # not JSON any more
    d = orjson.loads(payload)
    if not isinstance(d, dict) or not d:
        return b"[" + payload
    target = d["k"] if "k" in d and isinstance(d["k"], dict) and rng.random() < 0.5 else d
    key = rng.choice(sorted(target))
    if how == 1:
        del target[key]
    elif how == 2 and isinstance(target.get("b"), list) and target["b"]:
        level = rng.randrange(len(target["b"]))
        target["b"][level] = [rng.choice(HOSTILE), target["b"][level][1]] if rng.random() < 0.5 else \
            rng.choice(HOSTILE)
    else:
        target[key] = rng.choice(HOSTILE)
    return json.dumps(d, separators=(",", ":")).encode()      # orjson refuses integers beyond 64 bits


GARBAGE = [
    (200, "text/html", b"<html><body><h1>502 Bad Gateway</h1></body></html>"),
    (200, "application/json", b'{"lastUpdateId": 1, "bids": [["1.0", "2'),
    (200, "application/json", b"[1, 2, 3]"),
    (200, "application/json", b'{"code": 0, "msg": "ok"}'),
    (200, "application/json", b'{"lastUpdateId": "soon", "bids": [["abc", "1"]], "asks": {}}'),
    (200, "text/plain", b""),
]


def garbage(rng):
    """``(status, content type, body)`` of a REST answer that is not the JSON asked for."""
    return GARBAGE[rng.randrange(len(GARBAGE))]
