"""The opt-out spool: STOP replies that arrived while the database could not be written.

No STOP is lost (N11): when the consent store fails, an inbound STOP (its provider's signature
already checked) is appended here, one JSON line per message, and is written to the database
as soon as it can be, by `SpoolDrain`, in the order it arrived, with the moment it arrived.

Durability: a line is on disk before the sender is answered (`os.fsync` of the file, and of
the directory when the file or the directory is new). Applied lines are removed by writing
the rest to a new file and renaming it over the old one, only after their database commit:
a crash in between applies a line again, which is harmless (a provider's message id is
unique in `inbound_messages`). A line that cannot be read (the tail of a write cut off by a
crash) is kept as it is and logged, never dropped. The file holds full numbers: it is created
0600 in a 0700 directory, and holds no message text (only its SHA-256 and what it meant).

Several processes may share the directory: every change happens under an exclusive `flock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import os
import threading
from collections.abc import Awaitable, Callable, Collection, Iterator
from pathlib import Path
from typing import Literal

import msgspec
import structlog

from proxy.db import STORE_ERRORS
from proxy.settings import ConfigError

log = structlog.get_logger("proxy.optout_spool")

SPOOL_FILE = "optout-spool.jsonl"
_LOCK_FILE = ".lock"


class SpoolEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One inbound message, with what is needed to apply it later as if it were applied when
    it arrived: its time, both numbers, and what it meant (not its text)."""

    message_sid: str  # the provider's id for the message (the name is kept: lines on disk)
    received_at: dt.datetime
    to: str  # our number, as the provider sent it: the sender and so the organisation
    subject: str  # E.164 of the person who sent it
    body_hash: str  # SHA-256 of the body, the evidence kept instead of the text (N12)
    # What the shared keyword lists made of it ("stop", or "other" for anything else) ...
    intent: Literal["stop", "other"]
    # ... and the organisations whose own words (optout.organisations) read it the other way.
    exceptions: tuple[str, ...] = ()
    # The front that delivered it; lines written before fronts were named came through Twilio.
    provider: str = "twilio"

    @property
    def key(self) -> tuple[str, str]:
        return (self.provider, self.message_sid)


_decoder = msgspec.json.Decoder(SpoolEntry)
_encoder = msgspec.json.Encoder()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class OptOutSpool:
    """The spool file in `directory` (`OPTOUT_SPOOL_DIR`). Blocking: call from a thread."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / SPOOL_FILE
        self._thread_lock = threading.Lock()
        self._keys: set[tuple[str, str]] = set()
        self.entries = 0  # readable entries waiting (readiness and the gauge)

    def check(self) -> None:
        """At start-up: the directory is usable, or can be made (it is made when first
        needed). Raises ConfigError naming OPTOUT_SPOOL_DIR."""
        where = self.directory.absolute()
        if where.exists():
            if not where.is_dir():
                raise ConfigError(f"OPTOUT_SPOOL_DIR: {str(where)!r} is not a directory")
            if not os.access(where, os.W_OK | os.X_OK):
                raise ConfigError(f"OPTOUT_SPOOL_DIR: {str(where)!r} is not writable")
            return
        parent = where.parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"OPTOUT_SPOOL_DIR: {str(where)!r} cannot be created "
                              f"({str(parent)!r} is not a writable directory)")

    def holds(self, provider: str, message_id: str) -> bool:
        return (provider, message_id) in self._keys

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._thread_lock:
            if not self.directory.is_dir():
                missing = self.directory.absolute()
                while not missing.parent.exists():
                    missing = missing.parent
                self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                _fsync_dir(missing.parent)  # the new directory's name is durable too
            fd = os.open(self.directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def append(self, entry: SpoolEntry) -> None:
        """Add one entry; it is on disk when this returns."""
        line = _encoder.encode(entry) + b"\n"
        with self._locked():
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # a line cut off by a crash stays a line of its own
                _write_all(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                _fsync_dir(self.directory)
            self._keys.add(entry.key)
            self.entries += 1

    def load(self) -> list[SpoolEntry]:
        """Every readable entry, in the order they arrived."""
        with self._thread_lock:  # (an append in another thread cannot come in between)
            if not self.path.exists():  # nothing spooled (the directory is made when needed)
                self._keys, self.entries = set(), 0
                return []
        with self._locked():
            entries, unreadable = self._read()
        if unreadable:
            log.warning("optout_spool_unreadable", lines=unreadable, path=str(self.path),
                        note="kept in the file; applied lines are removed around them")
        return entries

    def _read(self) -> tuple[list[SpoolEntry], int]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        entries, unreadable = [], 0
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                entries.append(_decoder.decode(line))
            except msgspec.DecodeError:
                unreadable += 1
        self._keys = {entry.key for entry in entries}
        self.entries = len(entries)
        return entries, unreadable

    def remove(self, keys: Collection[tuple[str, str]]) -> None:
        """Drop the entries of these (provider, message id)s (applied and committed);
        crash-safe."""
        done = set(keys)
        with self._locked():
            try:
                lines = self.path.read_bytes().splitlines(keepends=True)
            except FileNotFoundError:
                lines = []
            keep = [line for line in lines if line.strip() and _sid(line) not in done]
            if keep:
                tmp = self.path.with_name(SPOOL_FILE + ".tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                try:
                    _write_all(fd, b"".join(line if line.endswith(b"\n") else line + b"\n"
                                            for line in keep))
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(tmp, self.path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            _fsync_dir(self.directory)
            self._read()


def _sid(line: bytes) -> tuple[str, str] | None:
    try:
        return _decoder.decode(line).key
    except msgspec.DecodeError:
        return None  # unreadable lines are never removed


Apply = Callable[[SpoolEntry], Awaitable[None]]


class SpoolDrain:
    """Applies the spool: at start-up, after each new entry, and while the database is still
    down, again after a bounded backoff (`retry_initial` doubling up to `retry_max`)."""

    def __init__(self, spool: OptOutSpool, apply: Apply, *, retry_initial: float = 0.5,
                 retry_max: float = 30.0) -> None:
        self.spool = spool
        self._apply = apply
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def apply_pending(self) -> int:
        """Apply every entry in order; returns how many. Raises the store's error when the
        database fails; what was committed before is removed from the spool all the same."""
        async with self._lock:
            entries = await asyncio.to_thread(self.spool.load)
            done: list[tuple[str, str]] = []
            try:
                for entry in entries:
                    await self._apply(entry)
                    done.append(entry.key)
            finally:
                if done:
                    await asyncio.to_thread(self.spool.remove, done)
                    log.info("optout_spool_applied", entries=len(done),
                             left=self.spool.entries)
            return len(done)

    async def run(self) -> None:
        delay = self.retry_initial
        while True:
            self._wake.clear()
            if self.spool.entries:
                try:
                    await self.apply_pending()
                    delay = self.retry_initial
                    continue
                except STORE_ERRORS as exc:
                    log.warning("optout_spool_apply_failed", error=type(exc).__name__,
                                entries=self.spool.entries, retry_in_seconds=delay)
                except Exception:
                    # Not an outage: the entry stays (nothing is dropped) and later ones wait
                    # behind it (order matters); the log says why.
                    log.exception("optout_spool_apply_crashed", entries=self.spool.entries,
                                  retry_in_seconds=delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                delay = min(delay * 2, self.retry_max)
            else:
                await self._wake.wait()
                delay = self.retry_initial
