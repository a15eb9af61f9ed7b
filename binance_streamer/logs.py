"""Logging: UTC times, level, process name and pid, logger name. Children
log through a queue; the manager's listener writes the one log file."""

import logging
import logging.handlers
import os
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


def start_listener(cfg, log_q, to_stderr):
    """Handlers for the whole daemon, fed by the children's queue and the manager."""
    handlers = [file_handler(cfg)]
    if to_stderr:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(formatter())
        handlers.append(h)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(cfg.log_level)
    listener = logging.handlers.QueueListener(log_q, *handlers, respect_handler_level=True)
    listener.start()
    return listener
