"""Rows of a compiled SELECT as dicts by column label, converted as SQLAlchemy's types convert them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

from sqlalchemy import Select

__all__ = ["AnySelect", "RowShape"]

# A SELECT of any number of columns of any types (SQLAlchemy 2.1 types each column).
AnySelect: TypeAlias = "Select[*tuple[Any, ...]]"


class RowShape:
    """A SELECT's column labels and its dialect's result conversions (JSON, dates, UTC timestamps),
    for statements run straight on a DBAPI connection (PreparedRead, BatchedRead)."""

    __slots__ = ("_processors", "names")

    def __init__(self, statement: AnySelect, dialect: Any) -> None:
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
