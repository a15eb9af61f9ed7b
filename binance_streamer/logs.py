"""Logging: UTC times, level, process name and pid, logger name. Children
send their records over their control links to the manager; the manager's
records and theirs go through one in-process queue to a listener thread,
which alone writes the log file (so a slow or full disk never stops the
manager's loop)."""

import logging
import logging.handlers
import os
import queue
import sys
import time

FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(processName)s[%(process)d] %(name)s: %(message)s"
LOG_FILE = "binance-streamer.log"


def formatter():
    f = logging.Formatter(FORMAT, datefmt="%Y-%m-%dT%H:%M:%S")
    f.converter = time.gmtime
    return f


def file_handler(cfg):
    """Size-based rotation, or a handler that reopens the file after logrotate."""
    os.makedirs(cfg.log_dir, exist_ok=True)
    path = os.path.join(cfg.log_dir, LOG_FILE)
    if cfg.log_max_bytes:
        h = logging.handlers.RotatingFileHandler(path, maxBytes=cfg.log_max_bytes, backupCount=cfg.log_backups)
    else:
        h = logging.handlers.WatchedFileHandler(path)
    h.setFormatter(formatter())
    return h


QUEUE_SIZE = 100_000     # records waiting for the log file; beyond it they are dropped and counted


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """The manager's own records: never wait for the listener."""

    def enqueue(self, record):
        try:
            self.queue.put_nowait(record)
        except queue.Full:
            pass


class Listener(logging.handlers.QueueListener):
    """Stops within a deadline: a log file on a hung disk must not keep the
    recorder from exiting."""

    def stop(self, timeout=5.0):
        try:
            self.queue.put_nowait(self._sentinel)
        except queue.Full:
            pass
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


def start_listener(cfg, to_stderr):
    """The daemon's log handlers behind a queue: returns ``(listener, queue)``;
    the manager puts the children's records on the queue too."""
    handlers = [file_handler(cfg)]
    if to_stderr:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(formatter())
        handlers.append(h)
    log_queue = queue.Queue(QUEUE_SIZE)
    root = logging.getLogger()
    root.handlers[:] = [DroppingQueueHandler(log_queue)]
    root.setLevel(cfg.log_level)
    for h in handlers:
        h.setLevel(cfg.log_level)
    listener = Listener(log_queue, *handlers, respect_handler_level=True)
    listener.start()
    return listener, log_queue
