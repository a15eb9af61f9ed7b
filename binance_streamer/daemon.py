"""``--daemon start|stop|status``.

The pidfile is locked with ``flock`` by the running daemon for its whole
life, so the kernel releases it when the daemon dies, however it dies: a
second ``start`` is refused while the lock is held, and a stale pidfile
left by ``kill -9`` does not block the next start.

``start`` checks everything that can fail first (config, directories,
pidfile, exchangeInfo), then forks; the child detaches with python-daemon
and runs the recorder, and the parent waits until the status file says
RUNNING before it prints ``started``, or prints why it did not.
"""

import errno
import fcntl
import json
import os
import signal
import time

from . import proc
from . import status as statusmod
from . import statusreport

EXIT_RUNNING, EXIT_DEAD, EXIT_STOPPED, EXIT_UNKNOWN = 0, 1, 3, 4     # LSB status codes


DATA_LOCK = ".binance-streamer.lock"


class AlreadyRunning(Exception):
    """The lock is held; ``args[0]`` is the holder's pid (or None)."""


class LockFile:
    """A file held under an exclusive ``flock`` while the recorder lives,
    naming its holder: its pid on the first line (as tools that read
    pidfiles expect), its start time on the second (which proves, later,
    that the pid still belongs to this recorder and not to a process that
    reused the number). Never followed through a symlink."""

    def __init__(self, path):
        self.path = path
        self.fd = None

    def acquire(self):
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise RuntimeError(f"{self.path} is a symlink; the recorder does not write through links: "
                                   "remove it") from None
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise AlreadyRunning(read_pid(self.path)) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n{_start_time(os.getpid())}\n".encode())     # the pid alone on line 1
        os.fsync(fd)
        self.fd = fd
        return self

    def release(self, remove=True):
        if self.fd is not None:
            if remove:
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
            os.close(self.fd)
            self.fd = None


class PidFile(LockFile):
    """The pidfile in ``run_dir``: ``--daemon status`` and ``stop`` find the
    recorder by it. While it is held, the recorder is also named in the
    registry, so that status and stop find it from any directory."""

    def __init__(self, run_dir, cfg=None):
        super().__init__(os.path.join(run_dir, statusmod.PID_FILE))
        self.run_dir, self.cfg = run_dir, cfg

    def acquire(self):
        super().acquire()
        register(self.run_dir, self.cfg)
        return self

    def release(self, remove=True):
        if self.fd is not None:
            unregister(self.run_dir)
        super().release(remove)


def registry_dir():
    """Where running recorders are named, one file each: the user's state
    directory (``$XDG_STATE_HOME``, else ``~/.local/state``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "binance-streamer", "recorders")


def _entry_path(run_dir):
    return os.path.join(registry_dir(), _sha1(run_dir.encode())[:16] + ".json")


def _sha1(data):
    """SHA-1 of ``data`` in hex, from Python's own small ``_sha1`` module:
    hashlib would map OpenSSL (about 3.5 MB) into the manager, which uses no
    other hash. The same digest either way; hashlib where ``_sha1`` is not built."""
    try:
        from _sha1 import sha1
    except ImportError:
        from hashlib import sha1
    return sha1(data).hexdigest()


def register(run_dir, cfg):
    """Best effort: a recorder that cannot write its registry entry still
    records; status and stop then find it only through its run_dir."""
    entry = {"run_dir": run_dir, "pid": os.getpid(), "cwd": os.getcwd()}
    if cfg is not None:
        entry.update(market=cfg.market, data_dir=cfg.data_dir, symbols=cfg.symbols)
    try:
        os.makedirs(registry_dir(), exist_ok=True)
        tmp = _entry_path(run_dir) + f".{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(entry, f)
        os.replace(tmp, _entry_path(run_dir))
    except OSError:
        pass


def unregister(run_dir):
    try:
        os.unlink(_entry_path(run_dir))
    except OSError:
        pass


def registered():
    """The run_dirs of the recorders in the registry that are running now;
    entries of recorders that are gone are removed."""
    found = []
    try:
        names = sorted(os.listdir(registry_dir()))
    except OSError:
        return found
    for name in names:
        if not name.endswith(".json"):
            continue
        path = os.path.join(registry_dir(), name)
        try:
            with open(path) as f:
                entry = json.load(f)
            run_dir = entry["run_dir"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if probe(run_dir)[0] == "running":
            found.append(entry)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass
    return found


def locate(cfg, explicit):
    """``(run_dir, note)``: the run_dir of the recorder that status and stop
    act on. ``cfg.run_dir`` when a recorder holds it, or when the user named
    the config or run_dir (``explicit``); else the one recorder running
    anywhere, from the registry. ``note`` says how it was found, or where
    was looked when nothing was; RuntimeError when several recorders run."""
    if probe(cfg.run_dir)[0] != "stopped":
        return cfg.run_dir, f"looked in {cfg.run_dir}"
    running = registered()
    if explicit:
        elsewhere = "".join(f"; a recorder runs with run_dir {e['run_dir']} (pid {e['pid']}): pass --run-dir "
                            f"{e['run_dir']} for it" for e in running)
        return cfg.run_dir, f"looked in {cfg.run_dir}{elsewhere}"
    if len(running) == 1:
        return running[0]["run_dir"], f"found in the registry ({registry_dir()})"
    if len(running) > 1:
        listed = "; ".join(f"run_dir {e['run_dir']} (pid {e['pid']}, {e.get('market')} "
                           f"{','.join(e.get('symbols') or [])})" for e in running)
        raise RuntimeError(f"{len(running)} recorders are running: {listed}; choose one with --config or --run-dir")
    return cfg.run_dir, f"looked in {cfg.run_dir} and in the registry {registry_dir()}"


def lock_data_dir(data_dir):
    """Hold ``data_dir`` for this recorder's life: two recorders writing one
    directory would write every row twice. One line names the holder."""
    try:
        return LockFile(os.path.join(data_dir, DATA_LOCK)).acquire()
    except AlreadyRunning as exc:
        holder = f"pid {exc.args[0]}" if exc.args[0] else "another process"
        raise RuntimeError(f"data_dir '{data_dir}' is in use by another recorder ({holder}); stop it, or give "
                           "this one another --data-dir") from None


def _start_time(pid):
    import psutil
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except psutil.Error:
        return "0"


def read_holder(path):
    """``(pid, start time)`` from a lock file, or ``(None, None)``."""
    try:
        with open(path) as f:
            words = f.read().split()
    except OSError:
        return None, None
    pid = int(words[0]) if words and words[0].isdigit() else None
    started = float(words[1]) if len(words) > 1 and words[1].replace(".", "", 1).isdigit() else None
    return pid, started


def read_pid(path):
    return read_holder(path)[0]


def is_recorder(pid, started):
    """Is ``pid`` still the recorder that wrote the pidfile: the same start
    time, and a command line that runs binance_streamer?"""
    import psutil
    if pid is None or started is None:
        return False
    try:
        p = psutil.Process(pid)
        command = " ".join(p.cmdline())
        return abs(p.create_time() - started) < 1.0 and ("binance_streamer" in command
                                                         or "binance-streamer" in command)
    except psutil.Error:
        return False


def probe(run_dir):
    """``(state, pid)``: state is running, dead (stale pidfile) or stopped."""
    path = os.path.join(run_dir, statusmod.PID_FILE)
    if not os.path.exists(path):
        return "stopped", None
    pid = read_pid(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return "stopped", None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return "running", pid
    finally:
        os.close(fd)
    return "dead", pid


def detach_and_record(cfg, record):
    """In a forked child: become a daemon and record until stopped."""
    import daemon as python_daemon
    stderr = open(os.path.join(cfg.log_dir, "binance-streamer.stderr"), "a+")
    ctx = python_daemon.DaemonContext(working_directory="/", umask=0o022, stderr=stderr, signal_map={},
                                      files_preserve=[stderr])
    ctx.open()
    proc.catch_early_signals()          # a stop that races the start is a clean stop, not a kill
    code = 1
    pidfile = PidFile(cfg.run_dir, cfg)
    try:
        pidfile.acquire()
    except AlreadyRunning as exc:
        statusmod.write_status(cfg.run_dir, {"state": "FAILED", "pid": os.getpid(), "updated": time.time(),
                                             "error": f"another recorder is already running (pid {exc})"})
        os._exit(1)
    try:
        code = record(cfg, to_stderr=False)
    except Exception as exc:        # reported through the status file to the waiting `start`
        statusmod.write_status(cfg.run_dir, {"state": "FAILED", "pid": os.getpid(), "updated": time.time(),
                                             "error": f"{type(exc).__name__}: {exc}"})
        raise
    finally:
        pidfile.release()
        os._exit(code)


def start(cfg, record, timeout=60.0):
    """Returns ``(exit code, message)``; the message is for the user."""
    state, pid = probe(cfg.run_dir)
    if state == "running":
        return 1, f"already running (pid {pid}); stop it first with --daemon stop"
    lock_data_dir(cfg.data_dir).release(remove=False)      # in use by another recorder: say so before detaching
    try:
        os.unlink(statusmod.status_path(cfg.run_dir))
    except FileNotFoundError:
        pass
    child = os.fork()
    if child == 0:
        detach_and_record(cfg, record)
    os.waitpid(child, 0)             # the intermediate process exits as soon as the daemon detaches
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = statusmod.read_status(cfg.run_dir)
        if st is not None and st.get("state") == "RUNNING":
            return _connected(cfg, st["pid"], min(CONNECT_WAIT, max(1.0, deadline - time.monotonic())))
        if st is not None and st.get("state") in ("FAILED", "STOPPED"):
            return 1, f"failed to start: {st.get('error', 'it stopped at once')}; see {cfg.log_dir}"
        time.sleep(0.1)
    return 1, (f"did not report RUNNING within {timeout:.0f} s; see {cfg.log_dir} and run "
               "--daemon status")


CONNECT_WAIT = 20.0      # seconds `start` waits for a first connection to the exchange
CONNECT_TRIES = 3        # ... unless every connection has failed this many times already: it answers then


def _connected(cfg, pid, timeout):
    """``start``'s answer once the recorder runs: success when a connection
    to the exchange is up (not for a sink: it reads NATS) and, for a
    collector or sink, when every worker reached NATS and its stream; else
    what stops it (it keeps trying)."""
    role = getattr(cfg, "role", "all")
    began = time.monotonic()
    deadline = began + timeout
    while True:
        st = statusmod.read_status(cfg.run_dir) or {}
        children = st.get("children", {})
        conns = [c for child in children.values() for c in child.get("connections", ())]
        nats = {name: child.get("sink") or child.get("publisher") for name, child in sorted(children.items())
                if "sink" in child or "publisher" in child}
        exchange = role == "sink" or any(c.get("connected") for c in conns)
        reached = role == "all" or (nats and all(n.get("nats_connected") for n in nats.values()))
        if exchange and reached:
            return 0, f"started (pid {pid}); logs in {cfg.log_dir}, data in {cfg.data_dir}"
        given_up = (exchange or (conns and all(c.get("failures", 0) >= CONNECT_TRIES for c in conns))) and \
            (reached or (nats and all(_nats_errors(n) >= CONNECT_TRIES for n in nats.values())))
        if time.monotonic() >= deadline or given_up:
            break
        time.sleep(0.2)
    waited = max(1, round(time.monotonic() - began))
    if not exchange:
        errors = sorted({c["last_error"] for c in conns if c.get("last_error")})
        why = f" ({'; '.join(errors)})" if errors else ""
        return 1, (f"started (pid {pid}), but no connection to the exchange is up after {waited} s{why}; it "
                   f"keeps trying: see --daemon status and {cfg.log_dir}, or stop it with --daemon stop")
    return nats_unreached(cfg, pid, waited, nats)


def _nats_errors(n):
    return n.get("publish_errors", n.get("nats_errors")) or 0


def nats_unreached(cfg, pid, waited, nats):
    """``start``'s line for a collector or sink whose workers do not all reach NATS (``nats``: their status)."""
    from .cluster import shown
    where = ",".join(map(shown, cfg.nats_url))
    errors = sorted({n["last_error"] for n in nats.values() if n.get("last_error") and not n.get("nats_connected")})
    why = "; ".join(errors) or "no answer yet"
    return 1, (f"started (pid {pid}), but NATS at {where} is not usable after {waited} s: {why}; the recorder "
               f"keeps retrying: check nats_url and the NATS server, see --daemon status and {cfg.log_dir}, "
               "or stop it with --daemon stop")


def stop(cfg, force=False, timeout=None, run_dir=None, where=None):
    """``run_dir``: the recorder's, when ``locate`` found it elsewhere than
    ``cfg.run_dir``; ``where`` says where it was looked for."""
    run_dir = run_dir or cfg.run_dir
    state, pid = probe(run_dir)
    path = os.path.join(run_dir, statusmod.PID_FILE)
    if state == "stopped":
        return 0, f"not running ({where or f'looked in {run_dir}'})"
    if state == "dead":
        os.unlink(path)
        return 0, f"not running (removed a stale pidfile of pid {pid})"
    pid, started = read_holder(path)
    if not is_recorder(pid, started):
        return 1, (f"the pidfile {path} is locked but names pid {pid}, which is not the process that wrote it; "
                   "nothing was signalled: find the recorder with ps and stop it by hand")
    if force:
        role = (statusmod.read_status(run_dir) or {}).get("role", getattr(cfg, "role", "all"))
        _kill_tree(pid)
        _wait_gone(run_dir, 10)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return 0, f"killed (pid {pid}); " + statusreport.killed_outcome(role)
    os.kill(pid, signal.SIGTERM)
    timeout = timeout or cfg.stop_timeout * 4 + 11      # a writer restarted first, then three stages
    if not _wait_gone(run_dir, timeout):
        return 1, (f"still running after {timeout:.0f} s (pid {pid}); see {cfg.log_dir}, wait longer, or use "
                   "--daemon stop --force")
    st = statusmod.read_status(run_dir) or {}
    if st.get("state") == "STOPPED":
        return 0, f"stopped (pid {pid}); {statusreport.stop_outcome(st, cfg.log_dir)}"
    return 1, f"pid {pid} is gone, but it did not report a clean stop (last state {st.get('state')}); see {cfg.log_dir}"


def _kill_tree(pid):
    """SIGKILL the recorder and every process under it; its process group
    only when it leads one of its own (a daemon), never a shell's."""
    import psutil
    try:
        root = psutil.Process(pid)
        victims = root.children(recursive=True) + [root]
    except psutil.Error:
        return
    for p in victims:
        try:
            p.kill()
        except psutil.Error:
            pass
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_gone(run_dir, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe(run_dir)[0] != "running":
            return True
        time.sleep(0.1)
    return False


def status(cfg, run_dir=None, where=None):
    """``(LSB code, report dict)``. The report's ``health`` is the verdict a
    monitor acts on: DOWN when the recorder is not running or its status
    file is too old to be believed."""
    run_dir = run_dir or cfg.run_dir
    state, pid = probe(run_dir)
    st = statusmod.read_status(run_dir) or {}
    report = {"state": state, "pid": pid, "run_dir": run_dir, "looked": where or f"looked in {run_dir}"}
    if state != "running":
        why = "not running" if state == "stopped" else f"dead: pid {pid} is gone but its pidfile remains"
        report["health"] = {"state": statusmod.DOWN, "problems": [f"the recorder is {why} ({report['looked']})"]}
        return (EXIT_DEAD if state == "dead" else EXIT_STOPPED), report
    report.update(statusreport.summarize(st))
    old = statusmod.stale(st, time.time(), st.get("status_interval") or cfg.status_interval)
    if old is not None:
        report["health"] = {"state": statusmod.DOWN, "problems": [old]}
    return EXIT_RUNNING, report
