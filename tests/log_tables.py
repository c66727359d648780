"""Reading a prediction log's tables back in tests, as the database holds them."""

from typing import Any

import sqlalchemy as sa

from modelyard.serving.log_schema import predictions


def table_rows(url: str, table: sa.Table = predictions) -> list[Any]:
    """Every row of ``table`` in the database at ``url``, in insertion order ([] without it)."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            if not sa.inspect(connection).has_table(table.name):
                return []
            return list(connection.execute(sa.select(table).order_by(table.c.id)))
    finally:
        engine.dispose()
