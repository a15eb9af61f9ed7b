"""REST calls to Binance's public market data, inside the weight budget
shared by every process of the daemon (budgets.py)."""

import logging
import time

from . import parse
from .http import Session, exceptions as http_errors       # .http imports urllib3 its own way
from .budgets import ROUTINE, URGENT
from .. import markets
from .endpoints import REST_PREFIX, SERIES_ENDPOINTS, WEIGHTS, depth_weight, klines_weight

log = logging.getLogger(__name__)



class RestError(Exception):
    """A REST call failed in a way retrying will not mend (or retries ran out)."""

    def __init__(self, msg, status=None, code=None, reason=None):
        super().__init__(msg)
        self.status, self.code = status, code
        self.reason = reason or msg


class RestClient:
    def __init__(self, cfg, budget, stop=None, session=None):
        self.market = cfg.market
        self.base = cfg.rest_url + REST_PREFIX[cfg.market]
        self.root = cfg.rest_url
        self.timeout = cfg.rest_timeout
        self.budget = budget
        self.stop = stop
        self.session = session or Session(cfg.proxy, cfg.ca_file)
        self.requests = 0
        self.failures = 0
        self.malformed = 0           # answers with HTTP 200 that were not the JSON expected

    def get(self, endpoint, params, weight, priority=URGENT, attempts=5, quiet=False, check=None, path=None,
            pool=None):
        """GET with the budget, 429/418 pauses and retries of transient faults.
        An answer that is not JSON, or whose shape ``check`` (a function that
        raises ValueError, TypeError or KeyError) rejects, is retried like a
        server error and counted in ``malformed``. ``path``: the URL's path
        from the REST root (else ``endpoint`` under the market's prefix);
        ``pool``: a request budget of its own (budgets.RequestBudget) the
        request also waits for."""
        url = self.root + path if path else f"{self.base}/{endpoint}"
        delay = 0.5
        for attempt in range(1, attempts + 1):
            if pool is not None and not pool.acquire(self.stop):
                raise RestError(f"{endpoint}: stopped while waiting for its request limit")
            if not self.budget.acquire(weight, priority, self.stop):
                raise RestError(f"{endpoint}: stopped while waiting for request weight")
            self.requests += 1
            try:
                resp = self.session.get(url, params=params, timeout=self.timeout)
            except (http_errors.HTTPError, OSError) as exc:
                self.failures += 1
                problem = _describe(exc)
            else:
                used = resp.headers.get("X-MBX-USED-WEIGHT-1M")
                if used and used.isdigit():
                    self.budget.observe(int(used))
                if resp.status_code == 200:
                    body, problem = _answer(resp, check)
                    if problem is None:
                        return body
                    self.failures += 1
                    self.malformed += 1
                else:
                    self.failures += 1
                    problem = f"HTTP {resp.status_code} {_error_text(resp)}"
                if resp.status_code in (418, 429):
                    retry = _retry_after(resp)
                    log.warning("%s: HTTP %d; pausing all REST calls for %.0f s", endpoint,
                                resp.status_code, retry)
                    self.budget.pause(retry, resp.status_code)
                    continue
                if 200 < resp.status_code < 500 and resp.status_code not in (403, 408):
                    raise RestError(f"{endpoint} {params}: {problem}", resp.status_code, _error_code(resp), problem)
            if attempt < attempts:
                if not quiet:
                    log.warning("%s: %s; retrying in %.1f s", endpoint, problem, delay)
                if self.stop is not None and self.stop.wait(delay):
                    break
                if self.stop is None:
                    time.sleep(delay)
                delay = min(delay * 2, 10.0)
        raise RestError(f"{endpoint} {params}: {problem} (after {attempt} attempts)", reason=problem)

    def exchange_info(self):
        return self.get("exchangeInfo", {}, WEIGHTS[self.market]["exchangeInfo"], check=check_exchange_info)

    def depth(self, symbol, limit, priority=URGENT):
        return self.get("depth", {"symbol": symbol, "limit": limit}, depth_weight(self.market, limit), priority,
                        check=parse.snapshot)

    def agg_trades(self, symbol, from_id, limit=1000):
        return self.get("aggTrades", {"symbol": symbol, "fromId": from_id, "limit": limit},
                        WEIGHTS[self.market]["aggTrades"], check=_list_of(dict))

    def series(self, name, params, pool=None):
        """A REST series (endpoints.SERIES_ENDPOINTS): an object (openInterest)
        or a list of objects, as the exchange sent it. Routine: it may use
        only part of a minute's weight, the rest stays for snapshots and
        backfills."""
        spec = SERIES_ENDPOINTS[name]
        return self.get(name, params, spec.weight, ROUTINE, path=spec.path, pool=pool,
                        check=_list_of(dict) if spec.page_max else _object)

    def klines(self, symbol, interval, start_ms, end_ms, limit):
        params = {"symbol": symbol, "interval": interval, "startTime": start_ms, "endTime": end_ms,
                  "limit": limit}
        return self.get("klines", params, klines_weight(self.market, limit), check=_list_of(list))


def _answer(resp, check):
    """``(body, None)`` for a JSON answer ``check`` accepts, else ``(None, why)``."""
    ctype = resp.headers.get("Content-Type", "")
    if "json" not in ctype:
        return None, f"answered {ctype.split(';')[0] or 'no content type'} instead of JSON ({_snippet(resp)})"
    try:
        body = resp.json()
    except ValueError:
        return None, f"answered JSON that does not parse ({_snippet(resp)})"
    if check is not None:
        try:
            check(body)
        except parse.MALFORMED as exc:
            return None, f"answered JSON of the wrong shape ({exc})"
    return body, None


def _snippet(resp):
    return repr(resp.text[:60])


def _list_of(kind):
    def check(body):
        if body.__class__ is not list or not all(item.__class__ is kind for item in body):
            raise parse.BadValue(f"expected a list of {kind.__name__}s: {str(body)[:80]!r}")
    return check


def _object(body):
    if body.__class__ is not dict:
        raise parse.BadValue(f"expected an object: {str(body)[:80]!r}")


def check_exchange_info(body):
    if body.__class__ is not dict or body.get("symbols").__class__ is not list \
            or not all(s.__class__ is dict for s in body["symbols"]):
        raise parse.BadValue(f"expected an object with a list of symbols: {str(body)[:80]!r}")
    if body.get("rateLimits", []).__class__ is not list:
        raise parse.BadValue("rateLimits is not a list")


def _describe(exc):
    """A short reason for a failed request (urllib3's own texts run to lines)."""
    text = str(exc)
    if isinstance(exc, http_errors.ProxyError):
        return "the proxy refused or failed"
    if isinstance(exc, http_errors.SSLError):
        if "CERTIFICATE_VERIFY_FAILED" in text:
            detail = text.split("certificate verify failed: ")[-1].split(" (_ssl")[0]
            return f"its TLS certificate is not trusted ({detail}); set ca_file to the PEM file of its CA"
        return "the TLS handshake failed"
    if isinstance(exc, http_errors.TimeoutError) and not isinstance(exc, http_errors.NewConnectionError):
        return "timed out"          # (urllib3 files a refused connection under connect timeouts)
    for needle, short in (("refused", "connection refused"), ("Name or service", "unknown host"),
                          ("resolve", "unknown host"), ("reset", "connection reset")):
        if needle in text:
            return short
    return "connection failed"


def _retry_after(resp):
    value = resp.headers.get("Retry-After", "")
    return float(value) if value.replace(".", "", 1).isdigit() else 60.0


def _error_body(resp):
    try:
        body = resp.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _error_text(resp):
    body = _error_body(resp)
    return f"code {body.get('code')}: {body.get('msg')}" if body else repr(resp.text[:200])


def _error_code(resp):
    body = _error_body(resp)
    return body.get("code") if body else None


def trading_symbols(info, market):
    """TRADING symbols of an exchangeInfo answer (markets.LISTED_CONTRACTS:
    USD-M its perpetual contracts, COIN-M perpetual and quarterly ones; COIN-M
    names the status ``contractStatus``)."""
    status, kinds = markets.STATUS_KEY[market], markets.LISTED_CONTRACTS[market]
    out = []
    for s in info.get("symbols", []):
        if s.get(status) != "TRADING":
            continue
        if kinds is not None and s.get("contractType", "PERPETUAL") not in kinds:
            continue
        out.append(s)
    return out


def weight_limit(info):
    for limit in info.get("rateLimits", []):
        if isinstance(limit, dict) and limit.get("rateLimitType") == "REQUEST_WEIGHT" \
                and limit.get("interval") == "MINUTE":
            try:
                return int(limit["limit"]) // max(1, int(limit.get("intervalNum", 1)))
            except (KeyError, TypeError, ValueError):
                return None
    return None
