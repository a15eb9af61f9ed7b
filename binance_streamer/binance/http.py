"""HTTP GET for the REST client on urllib3 alone: kept connections, the
``proxy`` setting (http://, socks5://, socks5h://), the ``ca_file``
authorities. requests on top of urllib3 cost each worker about 4 MB more
(its imports: charset_normalizer, idna, unicodedata) for nothing the
recorder uses. Answers are read whole and their JSON parsed by orjson."""

import importlib
import sys
import types

import orjson


def _import_urllib3():
    """urllib3, without importlib.metadata: urllib3 2 imports it at start
    (urllib3.http2, for a version check when HTTP/2 is switched on, which
    the recorder never does), and with it zipfile and pathlib: about 0.8 MB
    more in a worker's imports. While urllib3 loads, ``importlib.metadata`` is a
    stand-in that loads the real module the moment anything of it is used."""
    if "urllib3" in sys.modules or "importlib.metadata" in sys.modules:
        return importlib.import_module("urllib3")
    stand_in = types.ModuleType("importlib.metadata")

    def real():
        if sys.modules.get("importlib.metadata") is stand_in:
            del sys.modules["importlib.metadata"]
        return importlib.import_module("importlib.metadata")

    def attribute(name):
        if name.startswith("__"):               # the import system asks for __path__ and the like
            raise AttributeError(name)
        return getattr(real(), name)

    stand_in.version = lambda name: real().version(name)
    stand_in.__getattr__ = attribute
    sys.modules["importlib.metadata"] = stand_in
    try:
        return importlib.import_module("urllib3")
    finally:
        if sys.modules.get("importlib.metadata") is stand_in:
            del sys.modules["importlib.metadata"]


urllib3 = _import_urllib3()
exceptions = urllib3.exceptions


class Answer:
    """An HTTP answer, read whole: ``status_code``, ``headers`` (a
    case-insensitive mapping), ``text``, ``json()``."""

    __slots__ = ("status_code", "headers", "data")

    def __init__(self, status_code, headers, data):
        self.status_code, self.headers, self.data = status_code, headers, data

    @property
    def text(self):
        return self.data.decode("utf-8", "replace")

    def json(self):
        """The body as JSON; ValueError (orjson.JSONDecodeError) when it is not."""
        return orjson.loads(self.data)


class Session:
    """Connections kept per host; every certificate verified."""

    def __init__(self, proxy=None, ca_file=None, user_agent="binance_streamer"):
        options = {"headers": {"User-Agent": user_agent}, "cert_reqs": "CERT_REQUIRED", "ca_certs": ca_file,
                   "retries": False}
        if not proxy:
            self.pool = urllib3.PoolManager(**options)
        elif proxy.startswith("socks"):
            from urllib3.contrib.socks import SOCKSProxyManager      # PySocks: only for a SOCKS proxy
            self.pool = SOCKSProxyManager(proxy, **options)
        else:
            self.pool = urllib3.ProxyManager(proxy, **options)

    def get(self, url, params=None, timeout=None):
        """One GET, no retry; urllib3.exceptions.HTTPError when no answer came."""
        resp = self.pool.request("GET", url, fields=params, timeout=timeout, redirect=False)
        return Answer(resp.status, resp.headers, resp.data)
