"""What our taps share: Parquet batch files in the staging folder and a closing completion message."""

import functools
import json
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlparse

from singer_sdk import Stream, Tap
from singer_sdk import typing as th
from singer_sdk.helpers._batch import BatchConfig
from singer_sdk.mapper import PluginMapper

from northwind_elt import atomic, steps
from northwind_elt.errors import PrerequisiteError, SettingError, one_line
from northwind_elt.layout import DataTree, path_segment
from northwind_elt.protocol import completion_message, kept_message
from northwind_elt.run_date import parse_run_date

#: Settings that tie a tap to a step's marker (optional: without them a tap is a plain tap).
STEP_SETTINGS = th.PropertiesList(
    th.Property("step", th.StringType, description="Step whose marker this tap keeps"),
    th.Property("run_date", th.StringType, description="Logical date (YYYY-MM-DD) of the step"),
    th.Property("data_root", th.StringType, description="Root of the data tree (markers)"),
    th.Property("reextract", th.StringType,
                description="Read the source again for a day whose extract already succeeded "
                            "(true/1; default: keep that day's extract)"),
).to_dict()["properties"]


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
    """A tap whose streams write Parquet batches and whose run ends with a completion message.

    Configured with ``step``, ``run_date`` and ``data_root``, it also marks that step running when
    it starts and failed, with the reason, when it fails: a failing tap is the first to know why,
    and its target may be stopped before it could say anything.
    """

    def __init__(self, *args, **kwargs):
        #: What the step's marker records beside the rows (see :meth:`completion_details`).
        self.extra_details: dict = {}
        # The SDK's mapper discovers the streams (a connection, reads of the tree): the run's work,
        # done on first use (:attr:`mapper`), so that building a tap only checks its settings.
        kwargs["setup_mapper"] = False
        try:
            super().__init__(*args, **kwargs)
        except BaseException as error:
            self.record_failure(error)
            raise

    def discover(self) -> None:
        """Set up the SDK's stream mapper, which discovers the streams (once, in the run)."""
        if self._mapper is None:
            self.setup_mapper()

    @property
    def mapper(self) -> PluginMapper:
        """The SDK's stream mapper, set up (streams discovered) when the run first needs it."""
        self.discover()
        return self._mapper

    @mapper.setter
    def mapper(self, mapper: PluginMapper) -> None:
        self._mapper = mapper

    @classmethod
    def append_builtin_config(cls, config_jsonschema: dict) -> None:
        """Add the step settings to every tap's settings."""
        super().append_builtin_config(config_jsonschema)
        for name, schema in STEP_SETTINGS.items():
            config_jsonschema["properties"].setdefault(name, schema)

    @functools.cached_property
    def step_run(self) -> tuple[DataTree, str, object] | None:
        """(tree, step, day) when the tap keeps a step's marker; a malformed date raises here."""
        config = getattr(self, "_config", None) or {}
        if not config.get("step"):
            return None
        day = parse_run_date(config.get("run_date"))
        return DataTree.from_setting(config.get("data_root")), config["step"], day

    def record_failure(self, error: BaseException) -> None:
        """Mark the step failed, unless the error says the step must not touch anything."""
        if isinstance(error, PrerequisiteError):
            return  # refused before starting: the previous outcome stands
        try:
            run = self.step_run
        except SettingError:
            return  # no valid day: there is no marker to write
        if run is not None:
            # The batch files first: the failure may be a full disk, and the marker needs room.
            if (folder := getattr(self, "_batch_folder", None)) is not None:
                shutil.rmtree(folder, ignore_errors=True)
            steps.record_failure(*run, one_line(error))

    @functools.cached_property
    def run_id(self) -> str:
        """Names this run's folder of batch files, so concurrent runs never share files."""
        return uuid.uuid4().hex

    def batch_folder(self, batch_config: BatchConfig) -> Path:
        """The run's folder under ``batch_config.storage.root`` (a ``file://`` URL).

        When the step's data tree is on object storage, batch files stay on local disk (the
        tree's staging folder): the target checks them there and uploads each partition once.
        """
        run = self.step_run
        if run is not None and not run[0].fs.is_local:
            root = run[0].staging
        else:
            parsed = urlparse(batch_config.storage.root)
            if parsed.scheme != "file" or not parsed.path:
                raise SettingError("batch_config.storage.root must be a file:// URL, got "
                                   f"{batch_config.storage.root!r}")
            root = Path(parsed.path)
        folder = root / f"{self.name}-{self.run_id}"
        atomic.make_folders(folder)
        self._batch_folder = folder
        return folder

    def report_progress(self, stream: str, rows: int) -> None:
        """Log one line per finished stream, so a run shows how far it got."""
        self._finished = getattr(self, "_finished", 0) + 1
        self.logger.info("%s: %d rows handed over (%d of %d streams)",
                         stream, rows, self._finished, len(self.streams))

    def check_before_sync(self) -> None:
        """Refuse, before any row is read, what the tap cannot extract whole (none here)."""

    def completion_details(self) -> dict:
        """What the step's marker should record beside the rows (skipped relations...)."""
        return dict(self.extra_details)

    def kept(self) -> steps.StepMarker | None:
        """The day's succeeded extract this run keeps instead of reading the source, if any."""
        if self.step_run is None:
            return None
        reextract = steps.parse_flag(self.config.get("reextract"), "reextract")
        marker = steps.kept_extract(*self.step_run, reextract=reextract)
        if marker is not None:
            self.logger.info(steps.kept_message(marker))
        return marker

    def run_discovery(self) -> str:
        """Discover the streams (Meltano asks before every run), recording a failure as a sync would.

        A kept day reads nothing of the source: its catalog is empty, and the run keeps the day.
        Without a day (``meltano select --list``) the catalog is always read.
        """
        try:
            kept = self.kept()
        except SettingError:
            kept = None
        if kept is not None:
            print(json.dumps({"streams": []}))  # noqa: T201 (the catalog goes to stdout)
            return json.dumps({"streams": []})
        try:
            return super().run_discovery()
        except BaseException as error:
            self.record_failure(error)
            # The run ends here, its target never starts: nobody else would remove the note.
            if self.step_run is not None:
                steps.failure_note(*self.step_run).unlink(missing_ok=True)
            raise

    def sync_all(self) -> None:
        """Sync every selected stream, then announce completion with the row count of each.

        A day whose extract already succeeded is kept unless the ``reextract`` setting asks to
        read the source again: nothing is read, and the one message sent tells the target so.
        """
        kept = self.kept()
        if kept is not None:
            self.write_message(kept_message(asdict(kept)))
            return
        try:
            self.discover()
        except BaseException as error:
            self.record_failure(error)  # before the marker says running: a refusal leaves it as it was
            raise
        if self.step_run is not None:
            steps.begin(*self.step_run)
        try:
            self.check_before_sync()
            super().sync_all()
        except BaseException as error:
            self.record_failure(error)
            raise
        rows = {name: getattr(stream, "rows_written", 0) for name, stream in self.streams.items()
                if stream.selected}
        self.write_message(completion_message(self.name, rows, self.completion_details(),
                                              self.content_digests(), self.provenance(),
                                              self.file_checksums()))

    def content_digests(self) -> dict[str, dict]:
        """The content digest of each stream, for the manifests (none by default)."""
        return {}

    def file_checksums(self) -> dict[str, str]:
        """The SHA-256 of each stream's verified file, for the load's history (none by default)."""
        return {}

    def provenance(self) -> dict:
        """Where and when the run read its source, for the manifests (nothing by default)."""
        return {}
