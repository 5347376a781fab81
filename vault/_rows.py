"""Rows of a compiled SELECT as dicts by column label, converted as SQLAlchemy's types convert them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select

__all__ = ["RowShape"]


class RowShape:
    """A SELECT's column labels and its dialect's result conversions (JSON, dates, UTC timestamps),
    for statements run straight on a DBAPI connection (PreparedRead, BatchedRead)."""

    __slots__ = ("_processors", "names")

    def __init__(self, statement: Select[Any], dialect: Any) -> None:
        columns = statement.selected_columns
        self.names = tuple(column.key or str(i) for i, column in enumerate(columns))
        self._processors = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        )

    def as_dict(self, row: Sequence[Any]) -> dict[str, Any]:
        return {
            name: process(value) if process is not None else value
            for name, process, value in zip(self.names, self._processors, row, strict=True)
        }
