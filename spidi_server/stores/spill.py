"""The spill file: Redis writes that did not fit in memory while Redis was unreachable.

A first-in first-out queue on disk. While Redis does not answer, the hot store keeps its writes in
memory up to ``redis_buffer_max_ops``; beyond that it appends the oldest ones here, and once Redis
answers again it reads them back from the front, in order, before anything newer, and removes the
file when it has read it to the end. Everything the file holds is therefore older than what is in
memory, and the writes reach Redis in the order they were made.

Format: JSON lines (orjson), one operation per line, a JSON array whose first element is the
operation's kind (see ``recovery._record``). A line is only ever appended whole: each chunk is
one ``write()`` followed by ``fsync()``, and a chunk that fails is cut off again (``ftruncate``) so
a later chunk never follows half a line. A line that still does not parse (a crash in the middle
of a write) is skipped and counted as dropped.

fsync policy: once per appended chunk (up to ``CHUNK_OPS`` operations, and only while Redis is
unreachable), so what was spilled survives a crash of the machine, not only of the process. It
costs one disk flush per chunk, never one per operation, and never touches the heartbeat path.

Failures (disk full, read-only file system, a directory that cannot be created, the size cap)
never raise to the caller: the chunk is reported as not written (0 kept), the caller counts its
operations as dropped, and the error is logged once per episode with the path.

The blocking calls (``append``, ``read``, ``recover``) are meant to run in a thread
(``asyncio.to_thread``); one task uses the file at a time.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import orjson

from .. import logs

log = logging.getLogger("spidi.spill")

CHUNK_OPS = 5_000  # operations per write()+fsync(), and per read while replaying
_READ_BYTES = 1 << 20  # bytes read at a time while replaying


class SpillFile:
    """An append-at-the-end, read-from-the-front file of JSON records, with its counters."""

    def __init__(self, path: Path | str, max_bytes: int):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.ops = 0  # records in the file not yet replayed
        self.spilled_total = 0  # records ever appended
        self.failures = 0  # chunks that could not be written
        self.last_error: str | None = None
        self._fd: int | None = None
        self._size = 0  # bytes of whole records in the file
        self._read_at = 0  # offset of the first record not yet replayed
        self._leftover_end = 0  # records before this offset were left by an earlier process
        self._failing = False  # inside a failure episode (logged once)

    @property
    def bytes(self) -> int:
        """Bytes of records waiting to be replayed."""
        return self._size - self._read_at

    # -- writing -------------------------------------------------------------------------------

    def append(self, records: list) -> int:
        """Append ``records`` as one chunk (write, then fsync); returns how many were kept (0 when
        the chunk could not be written; a record that cannot be encoded is left out alone)."""
        lines = []
        for record in records:
            try:
                lines.append(orjson.dumps(record) + b"\n")
            except orjson.JSONEncodeError as exc:
                logs.event(
                    log, "spill_record_unencodable", logging.ERROR, kind=str(record[0]), error=str(exc)
                )
        data = b"".join(lines)
        if self._size + len(data) > self.max_bytes:
            return self._failed(f"spill file would exceed redis_spill_max_bytes ({self.max_bytes} bytes)")
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError as exc:
            self._cut_back()
            return self._failed(f"{exc.strerror or exc}")
        self._size += len(data)
        self.ops += len(lines)
        self.spilled_total += len(lines)
        if self._failing:
            self._failing = False
            logs.event(log, "spill_recovered", path=str(self.path))
        return len(lines)

    def _cut_back(self) -> None:
        """Remove the tail a failed write may have left, so the next chunk starts a fresh line."""
        if self._fd is not None:
            with contextlib.suppress(OSError):  # /dev/full and the like cannot be truncated
                os.ftruncate(self._fd, self._size)

    def _failed(self, error: str) -> int:
        self.failures += 1
        self.last_error = error
        if not self._failing:
            self._failing = True
            logs.event(log, "spill_failed", logging.ERROR, path=str(self.path), error=error)
        return 0

    # -- reading -------------------------------------------------------------------------------

    def read(self, max_records: int = CHUNK_OPS) -> tuple[list, int, int, bool]:
        """The next records from the front: (records, offset after them, lines consumed, leftover).

        ``leftover`` says the records were left by an earlier process (see ``recover``); a chunk
        never mixes those with this process's. Lines that do not parse are skipped but consumed.
        Nothing is consumed until ``consume`` is called, so a failed replay reads them again.
        """
        end = self._leftover_end if self._read_at < self._leftover_end else self._size
        leftover = self._read_at < self._leftover_end
        records: list = []
        lines = 0
        offset = self._read_at
        with open(self.path, "rb") as fh:
            fh.seek(offset)
            while offset < end and lines < max_records:
                block = fh.read(min(_READ_BYTES, end - offset))
                # A record longer than one read (a big roster announcement): read on to its end.
                while block and b"\n" not in block and offset + len(block) < end:
                    block += fh.read(min(_READ_BYTES, end - offset - len(block)))
                stop = block.rfind(b"\n")
                if stop < 0:
                    break  # no whole line left before ``end``
                for line in block[:stop].split(b"\n"):
                    if lines >= max_records:
                        break
                    offset += len(line) + 1
                    lines += 1
                    try:
                        records.append(orjson.loads(line))
                    except orjson.JSONDecodeError:
                        logs.event(
                            log,
                            "spill_line_unreadable",
                            logging.WARNING,
                            path=str(self.path),
                            offset=offset - len(line) - 1,
                        )
                fh.seek(offset)
        return records, offset, lines, leftover

    def consume(self, offset: int, lines: int) -> None:
        """The records up to ``offset`` reached Redis: drop them; remove the file once all did."""
        self._read_at = offset
        self.ops = max(0, self.ops - lines)
        if self._read_at >= self._size:
            self.remove()

    def remove(self) -> None:
        """Delete the file and start afresh (everything in it was replayed)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self.path.is_file():
            with contextlib.suppress(OSError):
                self.path.unlink()
        self._size = self._read_at = self._leftover_end = 0
        self.ops = 0

    def recover(self) -> int:
        """Take over a file an earlier process left (it stopped or died while Redis was away).

        Returns the records found. Only a regular file counts: a device such as /dev/full put
        in its place (to test a full disk) is left alone.
        """
        if not self.path.is_file():
            return 0
        count = 0
        data_end = 0  # just after the last newline: a half-written last line (a crash) is cut off
        offset = 0
        with open(self.path, "rb") as fh:
            while block := fh.read(_READ_BYTES):
                count += block.count(b"\n")
                last = block.rfind(b"\n")
                if last >= 0:
                    data_end = offset + last + 1
                offset += len(block)
        if data_end < offset:
            with open(self.path, "r+b") as fh:
                fh.truncate(data_end)
        self._size = self._leftover_end = data_end
        self._read_at = 0
        self.ops = count
        return count

    def close(self) -> None:
        """Release the file descriptor (the file stays if it still holds records)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
