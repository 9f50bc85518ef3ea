"""Reading batch input in bounded memory: format and schema checks, streaming
record batches, and cutting the stream into chunks of whole users.

Input must be *grouped by user_id*: all rows of a user contiguous (they need not
be sorted). A user whose rows reappear after another user's rows is an input
error (or, with --skip-invalid, the reappearing rows are rejected): checking
it costs one set of the user ids seen so far, which is far smaller than the rows.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from recsys.errors import EthicrecError

REQUIRED = ("user_id", "item_id")
OPTIONAL_STR = ("text", "group")
PREFIXES = ("feature.", "attr.", "audit.")
READ_ROWS = 65_536          # rows per record batch read from the input
DEFAULT_CHUNK_USERS = 512   # users per chunk (= per output part)
DEFAULT_CHUNK_ROWS = 200_000


class BatchInputError(EthicrecError):
    """The input cannot be processed as it is; names the column or row. Nothing has been written."""


def _is_text(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _is_text(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t) or \
        (hasattr(pa.types, "is_string_view") and pa.types.is_string_view(t))


def _is_id(t: pa.DataType) -> bool:
    return _is_text(t) or pa.types.is_integer(t) or \
        (pa.types.is_dictionary(t) and pa.types.is_integer(t.value_type))


def _is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_null(t)


@dataclass(frozen=True)
class InputSpec:
    """What the input is: its format and validated column layout."""

    path: Path
    format: str                      # "parquet" | "csv"
    delimiter: str
    columns: tuple[str, ...]
    schema: pa.Schema                # as read (CSV: as this module reads it, features as text)
    features: tuple[str, ...] = ()   # column names feature.<x>
    attrs: tuple[str, ...] = ()
    audits: tuple[str, ...] = ()
    num_rows: int | None = None      # Parquet: from the footer; CSV: unknown until read

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(c.removeprefix("feature.") for c in self.features)


def _format_of(path: Path) -> tuple[str, str]:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt"):
        return "csv", ","
    if suffix == ".tsv":
        return "csv", "\t"
    if suffix in (".parquet", ".pq", ".parq"):
        return "parquet", ""
    with open(path, "rb") as f:
        if f.read(4) == b"PAR1":
            return "parquet", ""
    raise BatchInputError(f"cannot tell the format of {path}: name it .parquet, .csv or .tsv")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _csv_options(columns: list[str], delimiter: str):
    types = {c: pa.string() for c in columns}  # features too: cast per chunk, so a bad value names its row
    return (pacsv.ReadOptions(block_size=8 << 20),
            pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            pacsv.ConvertOptions(column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=True))


def _pandas_index_columns(schema: pa.Schema) -> set[str]:
    import json

    try:
        meta = json.loads((schema.metadata or {}).get(b"pandas", b"{}"))
        return {c for c in meta.get("index_columns", []) if isinstance(c, str)}
    except (ValueError, AttributeError):
        return set()


def inspect_input(path: Path, declared_features: tuple[str, ...]) -> InputSpec:
    """Check the file and its columns (names, types) without reading the rows."""
    path = Path(path)
    if not path.is_file():
        raise BatchInputError(f"input file not found: {path}")
    fmt, delim = _format_of(path)
    try:
        if fmt == "parquet":
            pf = pq.ParquetFile(path)
            schema, num_rows = pf.schema_arrow, pf.metadata.num_rows
            index = _pandas_index_columns(schema)   # a DataFrame's index saved with it: not input data
            if index:
                schema = pa.schema([f for f in schema if f.name not in index])
        else:
            read, parse, _ = _csv_options([], delim)
            with pacsv.open_csv(path, read_options=read, parse_options=parse) as r:
                names = r.schema.names
            read, parse, conv = _csv_options(names, delim)
            schema, num_rows = pa.schema([(n, pa.string()) for n in names]), None
    except (pa.ArrowInvalid, OSError) as exc:
        raise BatchInputError(f"cannot read {path}: {_first_line(exc)}") from None
    names = list(schema.names)
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise BatchInputError(f"duplicate column name(s): {', '.join(dupes)}")
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise BatchInputError(f"missing required column(s): {', '.join(missing)} (have: {', '.join(names)})")
    for c in names:
        t = schema.field(c).type
        if c in REQUIRED:
            if not _is_id(t) or pa.types.is_null(t):
                raise BatchInputError(f"column {c} must be text (or integer ids); got {t}")
        elif c in OPTIONAL_STR:
            if not _is_text(t):
                raise BatchInputError(f"column {c} must be text; got {t}")
        elif c.startswith("feature."):
            name = c.removeprefix("feature.")
            if name not in declared_features:
                raise BatchInputError(f"column {c}: undeclared feature; accepted: "
                                      f"{', '.join(declared_features) or 'none'}")
            if fmt == "parquet" and not _is_number(t):
                raise BatchInputError(f"column {c} must be numeric; got {t}")
        elif c.startswith(("attr.", "audit.")):
            if not (_is_id(t) or pa.types.is_boolean(t)):
                raise BatchInputError(f"column {c} must be text; got {t}")
            if c in ("attr.", "audit."):
                raise BatchInputError(f"column {c} has no attribute name after the prefix")
        else:
            raise BatchInputError(f"unknown column {c}; expected user_id, item_id, text, group, "
                                  "feature.<name>, attr.<name>, audit.<name>")
    return InputSpec(path, fmt, delim, tuple(names), schema,
                     tuple(c for c in names if c.startswith("feature.")),
                     tuple(c for c in names if c.startswith("attr.")),
                     tuple(c for c in names if c.startswith("audit.")), num_rows)


def iter_tables(spec: InputSpec, start_row: int = 0) -> Iterator[tuple[int, pa.Table]]:
    """(input row number of the first row, table) in input order, READ_ROWS at a time.

    Parquet skips whole row groups before `start_row` without decoding them.
    """
    try:
        if spec.format == "parquet":
            pf = pq.ParquetFile(spec.path)
            first, offset = 0, 0
            md = pf.metadata
            for g in range(md.num_row_groups):
                n = md.row_group(g).num_rows
                if offset + n > start_row:
                    break
                offset += n
                first = g + 1
            row = offset
            groups = list(range(first, md.num_row_groups))
            if not groups:
                return
            for batch in pf.iter_batches(batch_size=READ_ROWS, row_groups=groups, columns=list(spec.columns),
                                         use_threads=False):
                yield row, pa.Table.from_batches([batch])
                row += batch.num_rows
        else:
            read, parse, conv = _csv_options(list(spec.columns), spec.delimiter)
            row = 0
            with pacsv.open_csv(spec.path, read_options=read, parse_options=parse, convert_options=conv) as r:
                for batch in r:
                    if batch.num_rows:
                        yield row, pa.Table.from_batches([batch])
                    row += batch.num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        raise BatchInputError(f"cannot read {spec.path}: {_first_line(exc)}") from None


def as_str(col: pa.ChunkedArray | pa.Array) -> list:
    if pa.types.is_boolean(col.type):
        col = pc.if_else(col, "true", "false")
    return pc.cast(col, pa.string()).to_pylist()


@dataclass
class Chunk:
    """Whole users, in input order: the unit that becomes one output part."""

    index: int
    table: pa.Table                  # the rows, input columns as read
    rows: np.ndarray                 # input row number of each row (int64)
    user_ids: list[str]              # one per user, in order
    starts: np.ndarray               # row offset of each user in `table`, plus len(table) at the end
    span: tuple[int, int] = (-1, -1)  # [first input row, last + 1) as cut, before rejected users are left out

    def __post_init__(self) -> None:
        if self.span == (-1, -1) and len(self.rows):
            self.span = (int(self.rows[0]), int(self.rows[-1]) + 1)

    @property
    def first_row(self) -> int:
        return self.span[0]

    @property
    def end_row(self) -> int:
        return self.span[1]

    def without_users_at(self, drop: np.ndarray) -> "Chunk":
        """The chunk minus every user with a row in `drop` (sorted input rows); same index."""
        if drop is None or not len(drop):
            return self
        hit = np.isin(self.rows, drop)
        if not hit.any():
            return self
        sizes = np.diff(self.starts)
        keep_user = ~np.logical_or.reduceat(hit, self.starts[:-1]) if len(sizes) else np.zeros(0, bool)
        keep_row = np.repeat(keep_user, sizes)
        return Chunk(self.index, self.table.filter(pa.array(keep_row)), self.rows[keep_row],
                     [u for u, k in zip(self.user_ids, keep_user) if k],
                     np.concatenate([[0], np.cumsum(sizes[keep_user])]).astype(np.int64), self.span)


@dataclass
class Rejected:
    """Rows taken out before scoring, with why (input row numbers, ascending per call)."""

    rows: np.ndarray
    reason: list[str]
    table: pa.Table


@dataclass
class Chunker:
    """Cuts a stream of tables into Chunks of `chunk_users` users (fewer when `chunk_rows` is reached first).

    Rows whose user_id is empty, and a user's rows that reappear after another
    user's (input not grouped), are errors; with `on_reject` set they are
    handed to it instead and left out. Chunk boundaries depend only on the
    input and the two sizes, so a second pass, or a resumed job starting at a
    chunk's first row with the rows rejected before (`drop_rows`) left out,
    cuts the same chunks.
    """

    chunk_users: int
    chunk_rows: int
    on_reject: object = None         # callable(Rejected) or None = strict
    check_order: bool = True
    drop_rows: np.ndarray | None = None   # sorted input rows to leave out silently
    next_index: int = 0
    _seen: set = field(default_factory=set)
    _runs: list = field(default_factory=list)       # complete runs: (user, [tables], [rows arrays], n)
    _open: list | None = None                       # [user, [tables], [rows], n]
    _n_rows: int = 0

    def _reject(self, table: pa.Table, rows: np.ndarray, reason: str) -> None:
        if self.on_reject is None:
            raise BatchInputError(f"row {int(rows[0])}: {reason}")
        self.on_reject(Rejected(rows, [reason] * len(rows), table))

    def feed(self, first_row: int, table: pa.Table) -> Iterator[Chunk]:
        n = table.num_rows
        rows = np.arange(first_row, first_row + n, dtype=np.int64)
        if self.drop_rows is not None and len(self.drop_rows):
            lo, hi = np.searchsorted(self.drop_rows, [first_row, first_row + n])
            if hi > lo:
                keep = np.ones(n, dtype=bool)
                keep[self.drop_rows[lo:hi] - first_row] = False
                table, rows = table.filter(pa.array(keep)), rows[keep]
                n = table.num_rows
        if n == 0:
            return
        uid = pc.cast(table.column("user_id"), pa.string())
        bad = pc.fill_null(pc.equal(uid, ""), True)
        if pc.any(bad).as_py():
            mask = bad.to_numpy(zero_copy_only=False)
            self._reject(table.filter(bad), rows[mask], "user_id is empty")
            keep = pc.invert(bad)
            table, rows, uid = table.filter(keep), rows[~mask], uid.filter(keep)
            n = table.num_rows
            if n == 0:
                return
        u = uid.combine_chunks() if isinstance(uid, pa.ChunkedArray) else uid
        change = pc.not_equal(u.slice(1), u.slice(0, n - 1)).to_numpy(zero_copy_only=False)
        starts = np.concatenate([[0], np.flatnonzero(change) + 1, [n]])
        names = pc.take(u, pa.array(starts[:-1])).to_pylist()
        for k, user in enumerate(names):
            s, e = int(starts[k]), int(starts[k + 1])
            piece, prow = table.slice(s, e - s), rows[s:e]
            if k == 0 and self._open is not None and self._open[0] == user:
                self._open[1].append(piece)
                self._open[2].append(prow)
                self._open[3] += e - s
                continue
            yield from self._close_open()
            self._open = [user, [piece], [prow], e - s]

    def _close_open(self) -> Iterator[Chunk]:
        if self._open is None:
            return
        user, tables, rows, n = self._open
        self._open = None
        if self.check_order:
            if user in self._seen:
                self._reject(pa.concat_tables(tables), np.concatenate(rows),
                             f"user {user!r} reappears after rows of other users; the input must be grouped "
                             "by user_id (all rows of a user contiguous)")
                return
            self._seen.add(user)
        if self._runs and (len(self._runs) >= self.chunk_users or self._n_rows + n > self.chunk_rows):
            yield self._emit()
        self._runs.append((user, tables, rows, n))
        self._n_rows += n

    def _emit(self) -> Chunk:
        tables = [t for run in self._runs for t in run[1]]
        rows = np.concatenate([r for run in self._runs for r in run[2]])
        starts = np.cumsum([0] + [run[3] for run in self._runs])
        chunk = Chunk(self.next_index, pa.concat_tables(tables), rows, [run[0] for run in self._runs], starts)
        self.next_index += 1
        self._runs, self._n_rows = [], 0
        return chunk

    def finish(self) -> Iterator[Chunk]:
        yield from self._close_open()
        if self._runs:
            yield self._emit()


def iter_chunks(spec: InputSpec, chunker: Chunker, start_row: int = 0) -> Iterator[Chunk]:
    """The input's chunks from `start_row` (which must be where a chunk starts)."""
    for first_row, table in iter_tables(spec, start_row):
        if first_row < start_row:
            if first_row + table.num_rows <= start_row:
                continue
            table = table.slice(start_row - first_row)
            first_row = start_row
        yield from chunker.feed(first_row, table)
    yield from chunker.finish()
