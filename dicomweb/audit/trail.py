"""The audit trail of one application: its tables registered with the store, the chain
appender, and the group-commit writer that appends every audited request."""

from __future__ import annotations

from collections.abc import Sequence

from dicomweb.access.cache import ExpiringCache
from dicomweb.audit import chain, tables
from dicomweb.audit.events import AuditEvent, Subject
from dicomweb.audit.writer import GroupWriter
from dicomweb.store.repository import Store

#: A study's patient as the index had it, remembered this long: frames of one study are
#: recorded without asking the index again for each.
PATIENT_CACHE_SECONDS = 60.0
PATIENT_CACHE_ENTRIES = 20000


class AuditTrail:
    def __init__(self, store: Store) -> None:
        store.register_tables(tables.metadata)
        self.store = store
        self._appender: chain.Appender | None = None
        self.unindexed = False
        self.patients: ExpiringCache[tuple[str | None, str | None]] = ExpiringCache(
            PATIENT_CACHE_SECONDS, PATIENT_CACHE_ENTRIES)
        self.writer: GroupWriter[AuditEvent] = GroupWriter(self.append, idle=self.index)

    @property
    def appender(self) -> chain.Appender:
        if self._appender is None:
            url = self.store.settings.effective_database_url
            self._appender = chain.Appender(chain.chain_engine(url))
        return self._appender

    def known(self, subjects: Sequence[Subject]) -> list[str]:
        """Resolve subjects whose study's patient is remembered; the study UIDs left."""
        missing: set[str] = set()
        for subject in subjects:
            if subject.patient is None:
                subject.patient = self.patients.get(subject.study)
                if subject.patient is None:
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
        self.unindexed = True
        return numbers

    def index(self) -> int:
        """Bring the search index up to date (a batch of records per call), when this
        process has appended since it last did."""
        if not self.unindexed:
            return 0
        done = self.appender.index()
        if done < chain.INDEX_BATCH:
            self.unindexed = False
        return done

    async def record(self, event: AuditEvent) -> int:
        """Append `event` with the others waiting now; returns once it is committed.
        Raises AuditUnavailable when it could not be written."""
        return await self.writer.append(event)

    def verify(self) -> chain.Verdict:
        return chain.verify(self.store.engine)

    def close(self) -> None:
        self.writer.close()
        if self._appender is not None:
            self._appender.close()
