"""Compressed day files: the codecs, and reading a day whatever state it is in.

A closed day file ``X.csv`` becomes ``X.csv.gz`` or ``X.csv.zst``
(compressor.py does it, crash-safely). A row that comes for a day already
compressed goes to a new plain ``X.csv`` (header, then the late rows), which
is later folded into the compressed file as one more gzip member or zstd
frame (its rows without the header). So a day is, at any instant:

- ``X.csv`` alone (not compressed yet);
- ``X.csv.gz`` alone;
- both, with the compressed content ending in the plain file's rows: a
  compression stopped after its rename, before the plain file's removal
  (the plain file is a copy, read once);
- both, otherwise: late rows not folded yet (both are read, compressed first).

:func:`open_day` gives the bytes of the day in every case, and every reader
(analysis, --verify, --status, the writer's recovery) opens day files with it.
"""

import gzip
import io
import os

from . import csvfiles

CHUNK = 1 << 20


def _zstd():
    import zstandard           # only when a zstd file is met or made
    return zstandard


def decompressing(codec, raw):
    """A binary reader of the decompressed content of the file object ``raw``
    (every gzip member, every zstd frame)."""
    if codec == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    return _zstd().ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)


def compressing(codec, raw, level=None):
    """A binary writer that compresses into ``raw`` (one gzip member or zstd frame)."""
    if codec == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6 if level is None else level, mtime=0)
    return _zstd().ZstdCompressor(level=3 if level is None else level).stream_writer(raw, closefd=False)


def siblings(path):
    """``(plain, compressed)`` paths of the day file ``path`` names (either
    name); each None when that file does not exist."""
    folder, name = os.path.split(path)
    plain = os.path.join(folder, csvfiles.plain_name(name) or name)
    packed = next((plain + s for s in csvfiles.COMPRESSED.values() if os.path.exists(plain + s)), None)
    return (plain if os.path.exists(plain) else None), packed


def read_all(path):
    """The decompressed content of a compressed file (tests, small files)."""
    with open(path, "rb") as raw, decompressing(csvfiles.codec_of(path), raw) as f:
        return f.read()


def body_of(plain):
    """The rows of a plain file: its bytes after the header line."""
    with open(plain, "rb") as f:
        data = f.read()
    if data[:1].isdigit():
        return data
    nl = data.find(b"\n")
    return b"" if nl < 0 else data[nl + 1:]


class _Day(io.RawIOBase):
    """The compressed content, then the late plain rows unless the compressed
    content already ends with them. The last ``len(late)`` bytes of the
    compressed stream are held back until its end, where they are compared."""

    def __init__(self, packed, late):
        self.src = decompressing(csvfiles.codec_of(packed), open(packed, "rb"))
        self.late = late
        self.held = b""
        self.out = b""
        self.done = False

    def readable(self):
        return True

    def readinto(self, buf):
        while not self.out and not self.done:
            chunk = self.src.read(CHUNK)
            if chunk:
                data = self.held + chunk
                keep = len(self.late)
                self.out, self.held = (data[:-keep], data[-keep:]) if keep else (data, b"")
                continue
            self.done = True
            if self.held == self.late:
                self.out = self.held            # folded already: the plain file is a copy
            else:
                sep = b"" if not self.held or self.held.endswith(b"\n") else b"\n"
                self.out = self.held + sep + self.late
        n = min(len(buf), len(self.out))
        buf[:n] = self.out[:n]
        self.out = self.out[n:]
        return n

    def close(self):
        if not self.closed:
            self.src.close()
        super().close()


def open_day(path):
    """A binary reader of one day file's rows (header first), ``path`` being
    its plain or compressed name: whatever state the day is in (see the
    module's doc), each row once. FileNotFoundError when neither exists."""
    plain, packed = siblings(path)
    if packed is None:
        if plain is None:
            raise FileNotFoundError(2, "no such day file", path)
        return open(plain, "rb")
    if plain is None:
        return io.BufferedReader(_Day(packed, b""), CHUNK)
    return io.BufferedReader(_Day(packed, body_of(plain)), CHUNK)


def folded(packed, plain):
    """Does the compressed file hold the plain file's rows at its end (a
    compression stopped before it removed the plain file)? Raises OSError
    (zstd's ZstdError, gzip's BadGzipFile, EOFError as OSError) when the
    compressed file does not decompress."""
    late = body_of(plain)
    tail = b""
    try:
        with open(packed, "rb") as raw, decompressing(csvfiles.codec_of(packed), raw) as f:
            while True:
                chunk = f.read(CHUNK)
                if not chunk:
                    break
                tail = (tail + chunk)[-max(len(late), 1):]
    except EOFError as exc:
        raise OSError(f"{packed}: truncated ({exc})") from None
    except OSError:
        raise
    except Exception as exc:           # zstandard.ZstdError
        raise OSError(f"{packed}: does not decompress ({exc})") from None
    return not late or tail.endswith(late)
