"""The ``database`` resource: one pooled SQLAlchemy engine per process."""

from __future__ import annotations

import threading
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import PrivateAttr

from reversal_pipeline.db.engine import check_connection, create_db_engine
from reversal_pipeline.db.url import mask_url

# Engines are shared by URL across resource instances of one process: Dagster
# builds a resource per step, and a fresh pool per step would reconnect for
# every asset of every run.
_ENGINES: dict[str, sa.Engine] = {}
_ENGINES_LOCK = threading.Lock()


class DatabaseResource(dg.ConfigurableResource):
    """The application database (``REVERSAL_DATABASE_URL``), as a pooled engine."""

    url: str
    pool_size: int = 20

    _engine: sa.Engine | None = PrivateAttr(default=None)

    def __repr_args__(self) -> Any:
        # The URL may carry a password; Dagster shows resource reprs in errors.
        return [("url", mask_url(self.url)), ("pool_size", self.pool_size)]

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        check_connection(self.get_engine())

    def get_engine(self) -> sa.Engine:
        if self._engine is None:
            with _ENGINES_LOCK:
                engine = _ENGINES.get(self.url)
                if engine is None:
                    engine = create_db_engine(self.url, pool_size=self.pool_size)
                    _ENGINES[self.url] = engine
            self._engine = engine
        return self._engine
