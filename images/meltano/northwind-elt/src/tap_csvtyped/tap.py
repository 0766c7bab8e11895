"""tap-csvtyped: CSV files with a declared schema, validated and handed over as Parquet BATCH."""

from northwind_elt.errors import SettingError
from northwind_elt.step_tap import BatchTap
from singer_sdk import typing as th
from singer_sdk.helpers.capabilities import PluginCapabilities

from tap_csvtyped.streams import CsvFileStream

_COLUMN = th.ObjectType(
    th.Property("name", th.StringType, required=True, description="Header name"),
    th.Property("type", th.StringType, required=True,
                description="PostgreSQL type: smallint, integer, bigint, real, double precision, "
                            "numeric(p,s), boolean, date, timestamp, text, varchar(n)"),
    th.Property("nullable", th.BooleanType, default=True, description="May the value be empty"),
)


class TapCsvTyped(BatchTap):
    """Typed, validated CSV files: every value checked against its declared type."""

    name = "tap-csvtyped"
    package_name = "northwind-elt"
    capabilities = (PluginCapabilities.BATCH, PluginCapabilities.ABOUT)
    config_jsonschema = th.PropertiesList(
        th.Property(
            "files",
            th.ArrayType(th.ObjectType(
                th.Property("stream", th.StringType, required=True, description="Stream name"),
                th.Property("path", th.StringType, description="Path of the CSV file"),
                th.Property("delimiter", th.StringType, default=",", description="Delimiter"),
                th.Property("key_properties", th.ArrayType(th.StringType),
                            description="Columns whose values must be unique together"),
                th.Property("allow_empty", th.BooleanType, default=False,
                            description="Accept a file with a header and no rows"),
                th.Property("columns", th.ArrayType(_COLUMN), required=True,
                            description="The header, in order, with types"),
            )),
            required=True,
            description="The CSV files to read, each with its declared schema",
        ),
    ).to_dict()

    def discover_streams(self) -> list[CsvFileStream]:
        """One stream per declared file."""
        specs = self.config.get("files") or []
        if not specs:
            raise SettingError("tap-csvtyped: the files setting declares no file")
        return [CsvFileStream(self, spec) for spec in specs]

    def content_digests(self) -> dict[str, dict]:
        """The content digest of each file's rows (when digests are on)."""
        return {name: stream.content_digest for name, stream in self.streams.items()
                if getattr(stream, "content_digest", None)}

    def provenance(self) -> dict:
        """Each file's path, size and modification time, by stream."""
        return {"streams": {name: getattr(stream, "file_state", {})
                            for name, stream in self.streams.items()}}


if __name__ == "__main__":
    TapCsvTyped.cli()
