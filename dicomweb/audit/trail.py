"""The audit trail of one application: its tables registered with the store, the chain
engine, and the group-commit writer that appends every audited request."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import Engine

from dicomweb.audit import chain, tables
from dicomweb.audit.events import AuditEvent, Subject
from dicomweb.audit.writer import GroupWriter
from dicomweb.store.repository import Store


class AuditTrail:
    def __init__(self, store: Store) -> None:
        store.register_tables(tables.metadata)
        self.store = store
        self._chain_engine: Engine | None = None
        self.writer: GroupWriter[AuditEvent] = GroupWriter(self.append)

    @property
    def chain_engine(self) -> Engine:
        if self._chain_engine is None:
            self._chain_engine = chain.chain_engine(self.store.settings.effective_database_url)
        return self._chain_engine

    def resolve(self, subjects: Sequence[Subject]) -> None:
        """PatientID and Issuer of each subject's study, from the index."""
        if any(subject.patient is None for subject in subjects):
            with self.store.engine.connect() as connection:
                chain.resolve_patients(connection, subjects)

    def append(self, events: Sequence[AuditEvent]) -> list[int]:
        """Resolve the group's patients (outside the chain lock), then append it."""
        self.resolve([subject for event in events for subject in event.subjects])
        return chain.append(self.chain_engine, events)

    async def record(self, event: AuditEvent) -> int:
        """Append `event` with the others waiting now; returns once it is committed.
        Raises AuditUnavailable when it could not be written."""
        return await asyncio.wrap_future(self.writer.submit(event))

    def verify(self) -> chain.Verdict:
        return chain.verify(self.store.engine)

    def close(self) -> None:
        self.writer.close()
        if self._chain_engine is not None:
            self._chain_engine.dispose()
