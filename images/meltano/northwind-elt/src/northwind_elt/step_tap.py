"""What our taps share: Parquet batch files in the staging folder and a closing completion message."""

import functools
import uuid
from pathlib import Path
from urllib.parse import urlparse

from singer_sdk import Stream, Tap
from singer_sdk.helpers._batch import BatchConfig

from northwind_elt.errors import SettingError
from northwind_elt.layout import path_segment
from northwind_elt.protocol import completion_message


class BatchStream(Stream):
    """A stream that hands its rows over as one Parquet file, never as RECORD messages."""

    rows_written = 0

    def get_records(self, context: dict | None):
        """Refuse record mode: these taps only hand over Parquet batches."""
        raise SettingError(f"{self._tap.name} needs batch_config: it hands over Parquet files")

    def batch_file(self, batch_config: BatchConfig) -> Path:
        """Where this stream's Parquet file is written for the target to take."""
        tap: BatchTap = self._tap  # type: ignore[assignment]
        folder = tap.batch_folder(batch_config)
        return folder / f"{path_segment(self.name)}.parquet"


class BatchTap(Tap):
    """A tap whose streams write Parquet batches and whose run ends with a completion message."""

    @functools.cached_property
    def run_id(self) -> str:
        """Names this run's folder of batch files, so concurrent runs never share files."""
        return uuid.uuid4().hex

    def batch_folder(self, batch_config: BatchConfig) -> Path:
        """The run's folder under ``batch_config.storage.root`` (a ``file://`` URL)."""
        parsed = urlparse(batch_config.storage.root)
        if parsed.scheme != "file" or not parsed.path:
            raise SettingError("batch_config.storage.root must be a file:// URL, got "
                               f"{batch_config.storage.root!r}")
        folder = Path(parsed.path) / f"{self.name}-{self.run_id}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def report_progress(self, stream: str, rows: int) -> None:
        """Log one line per finished stream, so a run shows how far it got."""
        self._finished = getattr(self, "_finished", 0) + 1
        self.logger.info("%s: %d rows handed over (%d of %d streams)",
                         stream, rows, self._finished, len(self.streams))

    def sync_all(self) -> None:
        """Sync every stream, then announce completion with the row count of each."""
        super().sync_all()
        rows = {name: getattr(stream, "rows_written", 0) for name, stream in self.streams.items()}
        self.write_message(completion_message(self.name, rows))
