"""The audit trail of one application: its tables registered with the store, the chain
appenders, and the group-commit writer that appends every audited request.

On SQLite a record that finds nothing queued and the write lock free is appended at once by the
thread that asks (`Appender(wait=False)`, a connection of its own); everything else goes
through the writer thread, which waits for the lock and commits whatever queued meanwhile in
one transaction. On PostgreSQL every append goes through the writer thread (a network round
trip must not hold up the event loop)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from dicomweb.access.cache import ExpiringCache
from dicomweb.audit import chain, tables
from dicomweb.audit.events import AuditEvent, Subject
from dicomweb.audit.verify import Verdict, verify
from dicomweb.audit.writer import GroupWriter
from dicomweb.store.repository import Store

log = logging.getLogger("dicomweb.audit")

#: A study's patient as the index had it, remembered this long: frames of one study are
#: recorded without asking the index again for each.
PATIENT_CACHE_SECONDS = 60.0
PATIENT_CACHE_ENTRIES = 20000
#: While requests keep coming, the search index is brought up to date in batches of this many
#: study rows (a record names one or more studies) or this often, whichever comes first
#: (searches read the newer records directly); a second without appends lets it catch up at
#: once. Larger batches cost less per row, and work done while requests wait for the GIL is
#: their latency.
INDEX_BACKLOG = chain.INDEX_ROWS
INDEX_SECONDS = 10.0


class AuditTrail:
    def __init__(self, store: Store) -> None:
        store.register_tables(tables.metadata)
        self.store = store
        self._appender: chain.Appender | None = None
        self._now_appender: chain.Appender | None = None
        self.unindexed = self.uncheckpointed = False
        #: Study rows appended since the last index batch; records since the last idle call.
        self.backlog = self.appended_lately = 0
        self.indexed_at = time.monotonic()
        self.closing = False
        self.upgraded = False
        self.patients: ExpiringCache[tuple[str | None, str | None]] = ExpiringCache(
            PATIENT_CACHE_SECONDS, PATIENT_CACHE_ENTRIES)
        sqlite = store.engine.dialect.name == "sqlite"
        self.writer: GroupWriter[AuditEvent] = GroupWriter(
            self.append, idle=self.idle, write_now=self.append_now if sqlite else None)

    @property
    def appender(self) -> chain.Appender:
        """The writer thread's: waits for the chain lock."""
        if self._appender is None:
            url = self.store.settings.effective_database_url
            self._appender = chain.Appender(chain.chain_engine(url))
        return self._appender

    @property
    def now_appender(self) -> chain.Appender:
        """The requests' own (SQLite): gives up at once when the write lock is taken."""
        if self._now_appender is None:
            url = self.store.settings.effective_database_url
            self._now_appender = chain.Appender(chain.chain_engine(url), wait=False)
        return self._now_appender

    def known(self, subjects: Sequence[Subject]) -> list[str]:
        """Resolve subjects whose study's patient is remembered; the study UIDs left."""
        if len(subjects) == 1:  # a retrieve names one study: no lists to build
            subject = subjects[0]
            if subject.patient is None:
                subject.patient = self.patients.get(subject.study)
            return [] if subject.patient is not None else [subject.study]
        pending = [subject for subject in subjects if subject.patient is None]
        if not pending:
            return []
        missing: set[str] = set()
        found = self.patients.get_many([subject.study for subject in pending])
        for subject, patient in zip(pending, found, strict=True):
            subject.patient = patient
            if patient is None:
                missing.add(subject.study)
        return sorted(missing)

    def learned(self, found: dict[str, tuple[str | None, str | None]]) -> None:
        """Remember what the index answered (studies it does not hold are asked again)."""
        for study, patient in found.items():
            self.patients.put(study, patient)

    def resolve(self, subjects: Sequence[Subject]) -> None:
        """PatientID and Issuer of each subject's study, from the index (before a delete)."""
        if self.known(subjects):
            with self.store.engine.connect() as connection:
                chain.resolve_patients(connection, subjects)

    def append(self, events: Sequence[AuditEvent]) -> list[int]:
        numbers = self.appender.append(events, self.known, self.learned)
        self.noted(events)
        return numbers

    def append_now(self, event: AuditEvent) -> int | None:
        """Append `event` in this thread if that needs no wait; None if it would."""
        try:
            number = self.now_appender.append_one(event, self.known)
            numbers = [number] if number is not None else \
                self.now_appender.append([event], self.known, self.learned)
        except chain.Busy:
            return None
        except Exception as exc:  # the writer thread tries again, and reports what stays
            log.info("audit append in the request failed, queued: %s: %s",
                     type(exc).__name__, getattr(exc, "orig", None) or exc)
            return None
        self.noted((event,))
        return numbers[0]

    def noted(self, appended: Sequence[AuditEvent]) -> None:
        self.unindexed = self.uncheckpointed = True
        for item in appended:
            self.backlog += len(item.subjects) or 1  # index rows
        self.appended_lately += len(appended)

    def idle(self) -> None:
        """The writer thread's work between groups: the search index, the WAL checkpoint."""
        if not self.upgraded:
            self.appender.upgrade()
            self.upgraded = self.unindexed = True
        self.index()
        if self.uncheckpointed:
            self.uncheckpointed = False
            self.appender.checkpoint()

    def index(self) -> int:
        """Bring the search index up to date (a batch of records per call), when this
        process has appended since it last did and a batch is due (see INDEX_BACKLOG)."""
        quiet, self.appended_lately = self.appended_lately == 0, 0
        due = (quiet or self.closing or self.backlog >= INDEX_BACKLOG
               or time.monotonic() - self.indexed_at >= INDEX_SECONDS)
        if not self.unindexed or not due:
            return 0
        done, full = self.appender.index()
        self.indexed_at = time.monotonic()
        if not full:
            self.unindexed = False
            self.backlog = 0
        return done

    async def record(self, event: AuditEvent, alone: bool = True) -> int:
        """Append `event` with the others waiting now; returns once it is committed.
        `alone`: no other audited request of this process is under way, so there is nothing
        to gather: write at once if that needs no wait. Raises AuditUnavailable when it could
        not be written."""
        return await self.writer.append(event, now=alone)

    def record_now(self, event: AuditEvent) -> int | None:
        """`event` appended at once by this thread if nothing is queued and that needs no wait
        (a lone request): its sequence number once committed; else None (use `record`)."""
        return self.writer.try_now(event)

    def record_blocking(self, event: AuditEvent) -> int:
        """`record` for threads without an event loop (DIMSE handlers): blocks until `event`
        is committed. Raises AuditUnavailable when it could not be written."""
        return self.writer.append_blocking(event)

    def verify(self) -> Verdict:
        return verify(self.store.engine)

    def close(self) -> None:
        self.closing = True  # the writer's last idle call indexes what is left
        self.writer.close()
        for appender in (self._appender, self._now_appender):
            if appender is not None:
                appender.close()
