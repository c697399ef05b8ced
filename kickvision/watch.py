"""Scheduled retraining: find catalog drops not yet processed and update the champion with each.

A drops folder holds one sub-folder per drop; they are processed in name order (so name them by
date, e.g. 2026-11-28-spring). A ledger (`.kickvision-watch.json` in the folder) records each drop's
content hash and outcome, written before and after every run, so a watcher restarted after a crash
neither skips a drop nor repeats one: a drop left "started" is run again, and the update pipeline
itself recognises a drop that already reached the registry (same content hash) and registers
nothing. A lock file keeps two watchers (say, overlapping cron starts) off the same folder.
Hidden folders are ignored: copy a drop in under a dot-name and rename it when complete.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kickvision.data.catalog import hash_drop
from kickvision.errors import CatalogError, KickvisionError

log = logging.getLogger(__name__)

LEDGER_FILE = ".kickvision-watch.json"
LOCK_FILE = ".kickvision-watch.lock"


class WatcherBusy(KickvisionError):
    """Another watcher holds the drops folder's lock."""


class DropFailed(KickvisionError):
    """A drop the update pipeline rejected for its data (recorded; not retried until it changes)."""


@dataclass
class Outcome:
    status: str  # done | failed
    detail: str


class DropLedger:
    """What happened to each drop, keyed by folder name; saved atomically and durably after every change."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict] = {}
        if path.is_file():
            try:
                self.entries = json.loads(path.read_text())
                if not isinstance(self.entries, dict):
                    raise ValueError("not a JSON object")
            except (ValueError, UnicodeDecodeError) as exc:
                raise KickvisionError(
                    f"the watch ledger {path} is unreadable ({exc}); restore it from a backup, or move it aside to "
                    "look at every drop afresh (the drop the champion learned last is recognised and skipped; "
                    "older drops would be applied again, so move those folders out first)"
                ) from None

    def settled(self, name: str, content_hash: str) -> bool:
        entry = self.entries.get(name)
        return entry is not None and entry["hash"] == content_hash and entry["status"] in ("done", "failed")

    def unchanged_and_settled(self, name: str, stamp: str) -> bool:
        """Settled, and its files look as they did then (sizes and times): no need to hash it again."""
        entry = self.entries.get(name)
        return entry is not None and entry.get("stamp") == stamp and entry["status"] in ("done", "failed")

    def record(self, name: str, content_hash: str, status: str, detail: str = "", stamp: str = "") -> None:
        entry = {"hash": content_hash, "status": status, "detail": detail, "at": time.time(), "stamp": stamp}
        self.entries[name] = entry
        self._write()

    def restamp(self, name: str, stamp: str) -> None:
        """Settled drop, same content, files touched: remember the new stamp so it is not hashed again."""
        self.entries[name]["stamp"] = stamp
        self._write()

    def _write(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w") as fh:
            fh.write(json.dumps(self.entries, indent=2))
            fh.flush()
            os.fsync(fh.fileno())  # on disk before it replaces the old ledger
        os.replace(tmp, self.path)  # a crash mid-write leaves the old ledger, never half a file
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # and the rename itself survives a power cut
        finally:
            os.close(directory)


def folder_stamp(folder: Path) -> str:
    """Names, sizes and modification times of every file in `folder` (cheap: no file is read)."""
    parts = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for filename in sorted(filenames):
            path = Path(dirpath, filename)
            try:
                stat = path.lstat()  # a dangling link is part of the listing, not an error
            except OSError:  # removed while we walked
                continue
            fields = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
            parts.append(f"{path.relative_to(folder)}:" + ":".join(map(str, fields)))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def drop_folders(drops_dir: Path) -> list[Path]:
    """Sub-folders of `drops_dir` in name order, hidden ones (still being copied in) left out."""
    if not drops_dir.is_dir():
        raise KickvisionError(f"drops folder not found: {drops_dir}")
    return sorted(p for p in drops_dir.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def pending_drops(drops_dir: Path, ledger: DropLedger) -> list[tuple[Path, str, str]]:
    """(folder, content hash, stamp) of the drops not yet done or failed with their current content.

    A settled drop whose files look unchanged (folder_stamp) is not hashed again. A folder that is
    not a catalog drop at all (no catalog.csv) is pending with an empty hash: processing records it
    as failed, and it is looked at again only when its files change.
    """
    pending = []
    for folder in drop_folders(drops_dir):
        stamp = folder_stamp(folder)
        if ledger.unchanged_and_settled(folder.name, stamp):
            continue
        try:
            content_hash = hash_drop(folder)
        except CatalogError:
            content_hash = ""
        if not ledger.settled(folder.name, content_hash):
            pending.append((folder, content_hash, stamp))
        elif ledger.entries[folder.name].get("stamp") != stamp:
            ledger.restamp(folder.name, stamp)
    return pending


@contextmanager
def watcher_lock(drops_dir: Path) -> Iterator[None]:
    """Hold the folder's lock for the life of the watcher; refuse if another process holds it."""
    path = drops_dir / LOCK_FILE
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise WatcherBusy(f"another kickvision watch is already processing {drops_dir} (pid {holder})") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)  # the kernel also drops it if the process dies
        handle.close()


def process_pending(
    drops_dir: Path, update: Callable[[Path], str], max_drops: int | None = None
) -> list[tuple[str, Outcome]]:
    """Run `update` on every pending drop (the first `max_drops` of them), in name order, recording
    each outcome as it happens.

    `update` returns a one-line summary, raises DropFailed (or another KickvisionError) for a drop
    whose data is unusable, and anything else for a problem that is not the drop's fault: that one
    stops the watcher and the drop stays "started", to be retried on the next start.
    """
    ledger = DropLedger(drops_dir / LEDGER_FILE)
    outcomes = []
    for folder, content_hash, stamp in pending_drops(drops_dir, ledger)[:max_drops]:
        ledger.record(folder.name, content_hash, "started", stamp=stamp)
        log.info("drop %s: updating", folder.name)
        try:
            if not content_hash:
                hash_drop(folder)  # not a catalog drop: its CatalogError says why
            detail = update(folder)
        except KickvisionError as exc:
            if not is_drop_problem(exc):
                raise
            outcome = Outcome("failed", str(exc))
        else:
            outcome = Outcome("done", detail)
        ledger.record(folder.name, content_hash, outcome.status, outcome.detail, stamp=stamp)
        outcomes.append((folder.name, outcome))
    return outcomes


def is_drop_problem(exc: KickvisionError) -> bool:
    """Data problems are the drop's (record and move on); registry/server problems are not (stop)."""
    return isinstance(exc, CatalogError | DropFailed)


def watch(
    drops_dir: str | Path,
    update: Callable[[Path], str],
    once: bool = False,
    interval_s: float = 300.0,
    report: Callable[[str, Outcome], None] | None = None,
    max_drops: int | None = None,
) -> list[tuple[str, Outcome]]:
    """Process pending drops under the folder's lock; with `once`, return when none is left (or,
    with `max_drops`, after that many: a CI job persists the ledger between calls)."""
    if max_drops is not None and not once:
        raise KickvisionError("--max-drops goes with --once (a watcher that keeps looking has no last drop)")
    if not once and not (0 < interval_s < float("inf")):
        raise KickvisionError(f"--interval must be a positive number of seconds, not {interval_s}")
    drops_dir = Path(drops_dir).resolve()
    if not drops_dir.is_dir():
        raise KickvisionError(f"drops folder not found: {drops_dir}")
    done: list[tuple[str, Outcome]] = []
    with watcher_lock(drops_dir):
        while True:
            for name, outcome in process_pending(drops_dir, update, max_drops if once else None):
                done.append((name, outcome))
                if report:
                    report(name, outcome)
            if once:
                return done
            time.sleep(interval_s)
