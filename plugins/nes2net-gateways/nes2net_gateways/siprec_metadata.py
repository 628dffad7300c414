"""SIPREC recording metadata (RFC 7865): who is speaking on which labelled stream.

Two layouts are read. RFC 7865's: ``participant_id``/``stream_id`` attributes and
``<participantstreamassoc>`` elements naming what each participant sends. And the layout of
the drafts before it, still sent by deployed SBCs (Oracle/Acme Packet's samples): ``id``
attributes, ``<send>`` inside ``<participant>``, ``<dataMode>``, and the namespace without
``:1``.

Elements are matched by local name, so documents with or without the
``urn:ietf:params:xml:ns:recording:1`` namespace work. :func:`parse_rs_metadata` refuses
DTDs and entities, bounds sizes and counts, and raises only
:class:`~nes2net_gateways.sip_message.SipError`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field, replace

from nes2net_gateways.sip_message import SipError

__all__ = ["NAMESPACE", "Participant", "RecordingMetadata", "parse_rs_metadata"]

NAMESPACE = "urn:ietf:params:xml:ns:recording:1"
_MAX_TEXT = 256
_MAX_DEPTH = 32


@dataclass(frozen=True)
class Participant:
    """A recorded participant: its metadata id, address of record and display name."""

    participant_id: str
    aor: str | None
    name: str | None


@dataclass
class RecordingMetadata:
    """What one metadata document says (a partial update says only part of it)."""

    datamode: str | None = None
    session_ids: list[str] = field(default_factory=list)
    sip_session_ids: list[str] = field(default_factory=list)
    participants: dict[str, Participant] = field(default_factory=dict)
    stream_labels: dict[str, str] = field(default_factory=dict)
    senders: dict[str, str] = field(default_factory=dict)
    #: label -> how many participants send on that stream (over 1: a mix of several)
    sender_counts: dict[str, int] = field(default_factory=dict)
    #: participant id -> the stream ids it sends (its participantstreamassoc elements)
    sends: dict[str, list[str]] = field(default_factory=dict)

    def link(self) -> RecordingMetadata:
        """Work out :attr:`senders` and :attr:`sender_counts` from the associations."""
        self.senders, self.sender_counts = {}, {}
        for participant_id, stream_ids in self.sends.items():
            for stream_id in stream_ids:
                if stream_id in self.stream_labels:
                    label = self.stream_labels[stream_id]
                    self.senders.setdefault(label, participant_id)  # the first named sender
                    self.sender_counts[label] = self.sender_counts.get(label, 0) + 1
        return self

    def merged(self, update: RecordingMetadata) -> RecordingMetadata:
        """This document with a later one applied (RFC 7865 section 6: ``partial`` updates).

        A ``complete`` update replaces everything. A partial one restates what changed:
        its participants, streams and each participant's associations replace the earlier
        ones of the same id; sessions it does not name are kept.
        """
        if update.datamode != "partial":
            return update
        return replace(
            self, datamode=self.datamode,
            session_ids=update.session_ids or self.session_ids,
            sip_session_ids=update.sip_session_ids or self.sip_session_ids,
            participants={**self.participants, **{
                pid: Participant(pid, p.aor or old.aor, p.name or old.name)
                if (old := self.participants.get(pid)) is not None else p
                for pid, p in update.participants.items()}},
            stream_labels={**self.stream_labels, **update.stream_labels},
            sends={**self.sends, **update.sends}).link()

    def sender_of(self, label: str) -> Participant | None:
        """The participant sending on the stream with SDP ``a=label`` ``label``, if known.

        A sender named by a stream association but not described in this document is returned
        without aor or name.
        """
        participant_id = self.senders.get(label)
        if participant_id is None:
            return None
        return self.participants.get(participant_id) or Participant(participant_id, None, None)


def _local(tag: object) -> str:
    """The local name of an element tag (``{namespace}name`` or ``name``)."""
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _text(value: str | None) -> str | None:
    """Stripped and capped text; ``None`` when empty."""
    if value is None:
        return None
    value = value.strip()[:_MAX_TEXT].strip()
    return value or None


def _children(element: ET.Element, name: str) -> list[ET.Element]:
    return [child for child in element if _local(child.tag) == name]


def _child_text(element: ET.Element, name: str) -> str | None:
    return next((t for c in _children(element, name) if (t := _text(c.text))), None)


def _attr(element: ET.Element, name: str) -> str | None:
    """An attribute by local name (unqualified, or qualified in any namespace)."""
    if name in element.attrib:
        return _text(element.attrib[name])
    return next((_text(v) for k, v in element.attrib.items() if _local(k) == name), None)


def _parse_tree(data: bytes, max_bytes: int, max_elements: int) -> ET.Element:
    if len(data) > max_bytes:
        raise SipError(400, "recording metadata too large")
    try:
        text = bytes(data).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SipError(400, "recording metadata is not UTF-8") from None
    lowered = text.lower()
    if "<!doctype" in lowered or "<!entity" in lowered:
        raise SipError(400, "DTDs and entities are refused in recording metadata")
    # Parsing a str makes expat ignore any encoding declaration, so the check above holds.
    parser = ET.XMLPullParser(events=("start", "end"))
    root: ET.Element | None = None
    count = depth = 0
    try:
        parser.feed(text)
        parser.close()
        for event, element in parser.read_events():
            if root is None:
                root = element
            if event == "end":
                depth -= 1
                continue
            count += 1
            depth += 1
            if count > max_elements or depth > _MAX_DEPTH:
                raise SipError(400, "recording metadata has too many or too deep elements")
    except (ET.ParseError, ValueError):
        raise SipError(400, "malformed recording metadata XML") from None
    if root is None:
        raise SipError(400, "empty recording metadata")
    return root


def parse_rs_metadata(
    data: bytes, *, max_bytes: int = 65536, max_elements: int = 2000
) -> RecordingMetadata:
    """Parse an ``application/rs-metadata+xml`` document."""
    root = _parse_tree(data, max_bytes, max_elements)
    if _local(root.tag) != "recording":
        raise SipError(400, "recording metadata root must be <recording>")
    mode = next((t for c in root if _local(c.tag).lower() == "datamode"
                 if (t := _text(c.text))), None)
    meta = RecordingMetadata(datamode=mode.lower() if mode else None)
    for element in root:
        kind = _local(element.tag)
        if kind == "session":
            if (session_id := _attr(element, "session_id") or _attr(element, "id")) is not None:
                meta.session_ids.append(session_id)
            meta.sip_session_ids += [
                t for c in _children(element, "sipSessionID") if (t := _text(c.text))]
        elif kind == "participant":
            participant_id = _attr(element, "participant_id") or _attr(element, "id")
            if participant_id is None:
                continue
            send = _children(element, "send")
            if send:  # the drafts' layout: what a participant sends is listed in it
                meta.sends.setdefault(participant_id, []).extend(
                    t for c in send if (t := _text(c.text)))
            aor = _child_text(element, "aor")
            name = _child_text(element, "name")
            for name_id in _children(element, "nameID"):
                aor = _attr(name_id, "aor") or _child_text(name_id, "aor") or aor
                name = _child_text(name_id, "name") or name
            old = meta.participants.get(participant_id)
            if old is not None:
                aor, name = aor or old.aor, name or old.name
            meta.participants[participant_id] = Participant(participant_id, aor, name)
        elif kind == "stream":
            stream_id = _attr(element, "stream_id") or _attr(element, "id")
            label = _child_text(element, "label")
            if stream_id is not None and label is not None:
                meta.stream_labels[stream_id] = label
        elif kind == "participantstreamassoc":
            participant_id = _attr(element, "participant_id")
            if participant_id is not None:
                sends = [t for c in _children(element, "send") if (t := _text(c.text))]
                meta.sends.setdefault(participant_id, []).extend(sends)
    return meta.link()
