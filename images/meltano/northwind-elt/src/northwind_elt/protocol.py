"""How our taps tell a target that a run is complete.

Singer has no end-of-run message: a target that sees its input end cannot tell a finished tap from
one that crashed. Our taps therefore emit, as their very last message, a STATE whose value holds
:data:`COMPLETION_KEY` with the row count of every stream they sent. A target publishes only if it
saw that message and received exactly those rows.
"""

from dataclasses import dataclass, field
from typing import Any

from singer_sdk.singerlib import StateMessage

COMPLETION_KEY = "northwind_complete"


def completion_message(producer: str, rows: dict[str, int], details: dict | None = None
                       ) -> StateMessage:
    """The closing STATE message of a complete run; ``details`` go into the step's marker."""
    body = {"producer": producer, "rows": dict(rows), "details": dict(details or {})}
    return StateMessage(value={COMPLETION_KEY: body})


@dataclass(frozen=True)
class Completion:
    """What a tap announced at the end of a complete run."""

    producer: str
    rows: dict[str, int]
    #: What the tap wants the step's marker to record (skipped relations...).
    details: dict = field(default_factory=dict)


def parse_completion(state: Any) -> Completion | None:
    """The completion announced by a closing STATE value, or None for any other state."""
    if isinstance(state, dict) and isinstance(state.get(COMPLETION_KEY), dict):
        body = state[COMPLETION_KEY]
        rows = {str(k): int(v) for k, v in body.get("rows", {}).items()}
        details = body.get("details") if isinstance(body.get("details"), dict) else {}
        return Completion(str(body.get("producer", "unknown")), rows, details)
    return None
