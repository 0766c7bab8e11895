"""How our taps tell a target that a run is complete.

Singer has no end-of-run message: a target that sees its input end cannot tell a finished tap from
one that crashed. Our taps therefore emit, as their very last message, a STATE whose value holds
:data:`COMPLETION_KEY` with the row count of every stream they sent. A target publishes only if it
saw that message and received exactly those rows. A tap that keeps the day's earlier extract (a
rerun without reextract) sends one STATE holding :data:`KEPT_KEY` and nothing else.
"""

from dataclasses import dataclass, field
from typing import Any

from singer_sdk.singerlib import StateMessage

COMPLETION_KEY = "northwind_complete"
#: A tap that keeps the day's earlier extract (a rerun without reextract) says so instead.
KEPT_KEY = "northwind_kept"


def completion_message(producer: str, rows: dict[str, int], details: dict | None = None,
                       digests: dict[str, dict] | None = None,
                       provenance: dict[str, Any] | None = None,
                       files: dict[str, str] | None = None) -> StateMessage:
    """The closing STATE message of a complete run; ``details`` go into the step's marker.

    ``digests`` (each stream's content digest) and ``provenance`` (what the run read) go into the
    manifests; ``files`` (the SHA-256 of each stream's verified file) stamp the history's days.
    """
    body: dict[str, Any] = {"producer": producer, "rows": dict(rows), "details": dict(details or {})}
    if digests:
        body["digests"] = dict(digests)
    if provenance:
        body["provenance"] = dict(provenance)
    if files:
        body["files"] = dict(files)
    return StateMessage(value={COMPLETION_KEY: body})


@dataclass(frozen=True)
class Completion:
    """What a tap announced at the end of a complete run."""

    producer: str
    rows: dict[str, int]
    #: What the tap wants the step's marker to record (skipped relations...).
    details: dict = field(default_factory=dict)
    #: Content digest of each stream that has one (see :mod:`northwind_elt.content_digest`).
    digests: dict[str, dict] = field(default_factory=dict)
    #: Where and when the run read its source (manifest ``provenance``).
    provenance: dict[str, Any] = field(default_factory=dict)
    #: The SHA-256 of each stream's file, checked against its manifest (tap-datatree).
    files: dict[str, str] = field(default_factory=dict)


def parse_completion(state: Any) -> Completion | None:
    """The completion announced by a closing STATE value, or None for any other state."""
    if isinstance(state, dict) and isinstance(state.get(COMPLETION_KEY), dict):
        body = state[COMPLETION_KEY]
        rows = {str(k): int(v) for k, v in body.get("rows", {}).items()}
        details = body.get("details") if isinstance(body.get("details"), dict) else {}
        return Completion(str(body.get("producer", "unknown")), rows, details,
                          dict(body.get("digests") or {}), dict(body.get("provenance") or {}),
                          {str(k): str(v) for k, v in (body.get("files") or {}).items()})
    return None


def kept_message(marker: dict[str, Any]) -> StateMessage:
    """The only message of a run that keeps the day's extract: the marker it keeps."""
    return StateMessage(value={KEPT_KEY: dict(marker)})


def parse_kept(state: Any) -> dict[str, Any] | None:
    """The marker a tap kept, from its STATE value, or None for any other state."""
    if isinstance(state, dict) and isinstance(state.get(KEPT_KEY), dict):
        return state[KEPT_KEY]
    return None
