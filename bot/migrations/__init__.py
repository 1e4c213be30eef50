"""Alembic migrations, applied automatically at start (``Store.open``) and by ``python app.py migrate``."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config

HERE = Path(__file__).parent
_PG_MIGRATION_LOCK = 7_272_001


def upgrade(connection: sa.Connection) -> None:
    """Bring the schema to the newest revision on an open (sync) connection.

    Several instances (or several ``Store.open`` calls in one process) starting together migrate one after
    another: on PostgreSQL an advisory lock, on SQLite the database's write lock (``BEGIN IMMEDIATE``, which waits
    up to the busy timeout) is taken before Alembic looks at ``alembic_version``. Holding a lock for the whole
    upgrade also keeps Alembic's process-global ``context`` from being used by two upgrades at once.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})"))
    elif connection.dialect.name == "sqlite":
        driver = connection.connection.driver_connection
        if not getattr(driver, "in_transaction", True):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(HERE))
    head = ScriptDirectory.from_config(config).get_current_head()
    return str(head)
