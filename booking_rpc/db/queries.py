"""Named SQL statements loaded from sql/queries/*.sql.

A file holds statements headed by `-- name: <file stem>.<statement>`; the `--` lines right after the name
describe it, and the statement runs to the next `-- name:` or the end of the file. Handlers take statements
by name (`sql["slots.find"]`), so SQL text never gets built from input.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

_NAME_LINE = re.compile(r"^--\s*name:\s*(\S+)\s*$")


def default_sql_dir() -> Path:
    """The repository's sql/ (migrations/ and queries/). Another folder is a setting, `Settings.sql_dir`
    (BOOKING_RPC_SQL_DIR), which the composition root (app.sql_folder) applies."""
    return Path(__file__).resolve().parents[2] / "sql"


class QueryFileError(Exception):
    """A query file is malformed: duplicate name, wrong prefix, empty statement."""


@dataclass(frozen=True)
class Statement:
    name: str
    sql: str
    description: str
    source: Path


def _parse_file(path: Path) -> list[Statement]:
    stem = path.stem
    found: list[Statement] = []
    name: str | None = None
    description: list[str] = []
    body: list[str] = []
    in_description = False

    def finish() -> None:
        if name is None:
            return
        text = "\n".join(body).strip().rstrip(";").rstrip()
        if not text:
            raise QueryFileError(f"{path}: statement {name!r} is empty")
        found.append(Statement(name, text, " ".join(description).strip(), path))

    for line in path.read_text(encoding="utf-8").splitlines():
        match = _NAME_LINE.match(line.strip())
        if match:
            finish()
            name = match.group(1)
            if not name.startswith(stem + ".") or name == stem + ".":
                raise QueryFileError(f"{path}: statement name {name!r} must start with {stem + '.'!r}")
            description, body, in_description = [], [], True
            continue
        if name is None:
            continue  # file header before the first statement
        if in_description and line.lstrip().startswith("--"):
            description.append(line.lstrip()[2:].strip())
            continue
        in_description = False
        body.append(line)
    finish()
    return found


class Queries(Mapping[str, str]):
    """Every named statement of a folder, read once at start."""

    def __init__(self, statements: Mapping[str, Statement]) -> None:
        self._statements = dict(statements)

    @classmethod
    def load(cls, dir: Path | None = None) -> Queries:
        folder = dir if dir is not None else default_sql_dir() / "queries"
        statements: dict[str, Statement] = {}
        if folder.is_dir():
            for path in sorted(folder.glob("*.sql")):
                for stmt in _parse_file(path):
                    if stmt.name in statements:
                        first = statements[stmt.name].source
                        raise QueryFileError(f"{path}: duplicate statement name {stmt.name!r} (first in {first})")
                    statements[stmt.name] = stmt
        return cls(statements)

    def __getitem__(self, name: str) -> str:
        try:
            return self._statements[name].sql
        except KeyError:
            close = difflib.get_close_matches(name, self._statements, n=5, cutoff=0.5)
            hint = f"; close names: {', '.join(close)}" if close else ""
            raise KeyError(f"no SQL statement named {name!r}{hint}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._statements)

    def __len__(self) -> int:
        return len(self._statements)

    def names_by_text(self) -> dict[str, str]:
        """Statement name by SQL text: what runs a statement knows only its text (the traced connection)."""
        return {stmt.sql: name for name, stmt in self._statements.items()}

    def describe(self, name: str) -> str:
        """The statement's description comment (empty when it has none)."""
        self[name]  # same KeyError with hints
        return self._statements[name].description


__all__ = ["Queries", "QueryFileError", "Statement", "default_sql_dir"]
