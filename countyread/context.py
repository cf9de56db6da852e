"""The shared runtime context: settings, database, file store and job queue."""

from __future__ import annotations

from dataclasses import dataclass

from countyread.db import Database
from countyread.errors import ConfigurationError
from countyread.queue import LocalJobQueue
from countyread.settings import Settings, load_settings
from countyread.store import FileStore


@dataclass(frozen=True, slots=True)
class AppContext:
    settings: Settings
    db: Database
    store: FileStore
    queue: LocalJobQueue

    @classmethod
    def create(cls, settings: Settings | None = None) -> AppContext:
        """Open (and create if needed) the data directory, schema and store."""
        settings = settings or load_settings()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.resolved_database_url)
        db.create_all()
        store = FileStore(settings.store_dir)
        settings.quarantine_dir.mkdir(parents=True, exist_ok=True)
        settings.results_dir.mkdir(parents=True, exist_ok=True)
        return cls(settings, db, store, _queue(settings, db))

    def close(self) -> None:
        self.db.dispose()


def _queue(settings: Settings, db: Database) -> LocalJobQueue:
    if settings.queue_backend == "database":
        return LocalJobQueue(db, settings.job_lease_s)
    try:
        from countyread.celery_queue import CeleryJobQueue
    except ImportError as exc:
        raise ConfigurationError(
            "queue_backend=celery needs the celery extra: pip install 'countyread[celery]'"
        ) from exc
    return CeleryJobQueue(db, settings)
