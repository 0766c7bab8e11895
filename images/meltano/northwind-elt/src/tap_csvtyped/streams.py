"""One stream per declared CSV file: parsed by Arrow into the declared types, checked, written once."""

import typing as t
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from northwind_elt.arrow_io import CSV_BLOCK_BYTES, PARQUET_COMPRESSION, csv_convert_options
from northwind_elt.errors import InputError, StorageError, file_errors, os_reason
from northwind_elt.pgtypes import arrow_schema, declared_column, varchar_length
from northwind_elt.step_tap import BatchStream
from singer_sdk.helpers._batch import BaseBatchFileEncoding, BatchConfig

from tap_csvtyped.validate import arrow_problem, check_header, first_problem

#: Line number of the first data row (line 1 is the header).
FIRST_DATA_LINE = 2


class CsvFileStream(BatchStream):
    """A CSV file with a declared header, column types and key."""

    def __init__(self, tap, spec: dict[str, t.Any]):
        self.path = Path(spec["path"]) if spec.get("path") else None
        self.delimiter = spec.get("delimiter", ",")
        self.allow_empty = bool(spec.get("allow_empty", False))
        self.columns = [declared_column(c["name"], c["type"], c.get("nullable", True))
                        for c in spec["columns"]]
        schema = {"type": "object", "properties": {c.name: c.json_schema() for c in self.columns}}
        super().__init__(tap, schema=schema, name=spec["stream"])
        self.primary_keys = list(spec.get("key_properties", []))

    def get_batches(
        self, batch_config: BatchConfig, context: dict | None = None
    ) -> t.Iterable[tuple[BaseBatchFileEncoding, list[str]]]:
        """Validate the file, write it as one Parquet file and yield its URL."""
        source = self.checked_path()
        destination = self.batch_file(batch_config)
        try:
            self.rows_written = self.convert(source, destination)
        except BaseException:
            destination.unlink(missing_ok=True)
            raise
        self._tap.report_progress(self.name, self.rows_written)  # type: ignore[attr-defined]
        yield batch_config.encoding, [destination.as_uri()]

    def checked_path(self) -> Path:
        """The file's path, if it is set and names a readable file."""
        if self.path is None:
            raise InputError(f"stream {self.name}: no path is set (ORDER_DETAILS_CSV?)")
        if not self.path.is_file():
            raise InputError(f"stream {self.name}: {self.path} does not exist or is not a file")
        return self.path

    def convert(self, source: Path, destination: Path) -> int:
        """Parse ``source`` into typed Parquet at ``destination``; return the row count."""
        check_header(source, self.columns, self.delimiter)
        if _has_quote(source):
            # Arrow's parser is lenient with quotes ("x"junk, an unterminated quote): a file that
            # quotes anything is read once strictly first. Unquoted files are unambiguous.
            problem = first_problem(source, self.columns, self.delimiter)
            if problem:
                raise InputError(f"{source}: {problem}")
        schema = arrow_schema(self.columns)
        keys: list[pa.Table] = []
        rows = 0
        # The source's own read errors are named by _parse: an OSError left is the batch file's.
        with file_errors("write", destination), \
                pq.ParquetWriter(destination, schema, compression=PARQUET_COMPRESSION) as writer:
            for batch in self._parse(source):
                batch = pa.RecordBatch.from_arrays(batch.columns, schema=schema)
                self._check_batch(source, batch, rows)
                if self.primary_keys:
                    keys.append(pa.Table.from_batches([batch.select(self.primary_keys)]))
                writer.write_batch(batch)
                rows += batch.num_rows
        if rows == 0 and not self.allow_empty:
            raise InputError(f"{source}: the file has a header but no rows (set allow_empty to "
                             "accept an empty file)")
        if keys:
            self._check_unique(source, pa.concat_tables(keys))
        return rows

    def _parse(self, source: Path) -> t.Iterator[pa.RecordBatch]:
        try:
            reader = pacsv.open_csv(
                source,
                read_options=pacsv.ReadOptions(column_names=[c.name for c in self.columns],
                                               skip_rows=1, block_size=CSV_BLOCK_BYTES),
                parse_options=pacsv.ParseOptions(delimiter=self.delimiter,
                                                 ignore_empty_lines=False),
                convert_options=csv_convert_options(self.columns),
            )
            try:
                yield from reader
            finally:
                reader.close()  # stop Arrow's read-ahead thread before the process exits
        except pa.ArrowInvalid as error:
            if "Empty CSV file" in str(error):
                return
            problem = first_problem(source, self.columns, self.delimiter) or arrow_problem(
                source, self.columns, error, self.delimiter)
            raise InputError(f"{source}: {problem}") from None
        except OSError as error:  # unreadable, or gone mid-read
            raise StorageError(f"cannot read {source}: {os_reason(error)}") from None

    def _check_batch(self, source: Path, batch: pa.RecordBatch, offset: int) -> None:
        """Checks Arrow's parser does not make: NOT NULL, finite floats, varchar lengths."""
        for column, array in zip(self.columns, batch.columns, strict=True):
            bad = None
            if not column.nullable and array.null_count:
                bad = pc.is_null(array), "is empty, but the column is NOT NULL"
            elif pa.types.is_floating(array.type):
                bad = pc.invert(pc.is_finite(array)), f"is not a finite {column.sql_type}"
            elif (limit := varchar_length(column)) is not None:
                bad = pc.greater(pc.utf8_length(array), limit), f"is longer than {column.sql_type}"
            if bad is not None:
                mask, message = bad
                index = pc.index(pc.fill_null(mask, False), True).as_py()
                if index >= 0:
                    # Arrow counts rows, not lines (a quoted value may hold newlines): the
                    # record-by-record check names the real line when it sees the problem too.
                    line = FIRST_DATA_LINE + offset + index
                    problem = first_problem(source, self.columns, self.delimiter) or (
                        f"line {line}, column {column.name}: value {array[index].as_py()!r} "
                        f"{message}")
                    raise InputError(f"{source}: {problem}")

    def _check_unique(self, source: Path, keys: pa.Table) -> None:
        """Refuse a file whose key repeats, naming the key and the lines it is on.

        Integer keys that fit 64 bits together are packed into one int64 and sorted (a few bytes
        per row); other keys use a hash aggregation, which needs more memory.
        """
        packed = _packed_key(keys)
        if packed is not None:
            ordered = pc.take(packed, pc.sort_indices(packed))
            repeats = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1))
            at = pc.index(repeats, True).as_py()
            if at < 0:
                return
            mask = pc.equal(packed, ordered[at])
            count = pc.sum(repeats).as_py()
        else:
            counts = keys.group_by(self.primary_keys).aggregate([([], "count_all")])
            duplicated = counts.filter(pc.greater(counts["count_all"], 1))
            if duplicated.num_rows == 0:
                return
            mask = None
            for name in self.primary_keys:
                equal = pc.equal(keys[name], duplicated[name][0])
                mask = equal if mask is None else pc.and_(mask, equal)
            count = duplicated.num_rows
        indices = [i for i, hit in enumerate(mask.to_pylist()) if hit]
        shown = ", ".join(f"{k}={keys[k][indices[0]].as_py()}" for k in self.primary_keys)
        lines = ", ".join(str(FIRST_DATA_LINE + i) for i in indices[:5])
        raise InputError(f"{source}: duplicate key ({shown}) on lines {lines}; "
                         f"{count} repeated key rows in all")


def _has_quote(path: Path) -> bool:
    """Whether the file holds a double quote anywhere (read in 1 MiB chunks)."""
    with open(path, "rb") as handle:
        return any(b'"' in chunk for chunk in iter(lambda: handle.read(1 << 20), b""))


def _packed_key(keys: pa.Table) -> pa.Array | None:
    """The key columns packed into one int64 when they are integers that fit, else None."""
    widths = [keys.schema.field(n).type.bit_width if pa.types.is_integer(keys.schema.field(n).type)
              else 65 for n in keys.column_names]
    if sum(widths) > 63 or keys.num_rows == 0:
        return None
    packed = None
    for name, width in zip(keys.column_names, widths, strict=True):
        # Shift into 0..2^width-1, then append to the right of the columns before.
        column = pc.add(pc.cast(keys[name], pa.int64()), 1 << (width - 1)).combine_chunks()
        packed = column if packed is None else pc.add(pc.shift_left(packed, width), column)
    return packed
