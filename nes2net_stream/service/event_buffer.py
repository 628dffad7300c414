"""The publisher's bounded in-memory event queues and what each queued event carries."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any


@dataclass
class PendingEvent:
    """One event waiting for Redis."""

    doc: str  # the event's JSON document
    type: str
    event_id: str
    call_id: str
    is_alert: bool
    call_fields: dict[str, str]  # the call hash update
    received: float | None  # monotonic time the window's last sample arrived
    seq: int | None = None  # number in the alert journal

    @classmethod
    def of(cls, ev: dict[str, Any], doc: str, *, is_alert: bool, received: float | None = None,
           seq: int | None = None) -> PendingEvent:
        """The queued form of event ``ev`` serialised as ``doc``."""
        return cls(doc, ev["type"], ev["event_id"], ev["call_id"], is_alert,
                   call_fields(ev, doc), received, seq)

    @property
    def size(self) -> int:
        """Approximate bytes held (the JSON document dominates)."""
        return len(self.doc) + 256


class EventBuffer:
    """One bounded FIFO of events (alerts or scores)."""

    def __init__(self, kind: str, max_events: int, max_bytes: int):
        self.kind = kind
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.items: deque[PendingEvent] = deque()
        self.bytes = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.items)

    def full(self, incoming: int) -> bool:
        """True when one more event of ``incoming`` bytes does not fit."""
        return bool(self.items) and (len(self.items) >= self.max_events
                                     or self.bytes + incoming > self.max_bytes)

    def append(self, item: PendingEvent) -> None:
        """Queue at the tail."""
        self.items.append(item)
        self.bytes += item.size

    def popleft(self) -> PendingEvent:
        """Take the oldest."""
        item = self.items.popleft()
        self.bytes -= item.size
        return item


def call_fields(ev: dict[str, Any], doc: str) -> dict[str, str]:
    """The call hash update of one event (its latest state, score and document)."""
    fields = {"call_id": ev["call_id"], "updated": ev["ts"], "model_id": ev["model_id"],
              "gateway": ev["source"]["gateway"], f"last_{ev['type']}": doc}
    if ev.get("state"):
        fields["state"] = ev["state"]
    score = ev.get("running") or {}
    if "spoof_probability" in score:
        fields["running_spoof_probability"] = str(score["spoof_probability"])
    if ev["type"] == "summary":
        fields["ended"] = "1"
    return fields
