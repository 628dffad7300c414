"""RingCentral RingCX streaming messages (package ``ringcentral.ringcx.streaming.v1beta2``).

The wire format of the proto for RingCX's Workflow Studio "Start Streaming" action, as the
RingCX gRPC streaming implementation guide (DaKingKong/RingCX-gRPC-bot-guide) gives it:
field numbers, types and enum values as declared there, described here at run time with
protobuf descriptors (no generated code, no protoc step).

Service ``Streaming``, method ``Stream``: client streaming of ``StreamEvent`` (RingCX, one
call per dialog), answered with ``google.protobuf.Empty``.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2, message_factory

PACKAGE = "ringcentral.ringcx.streaming.v1beta2"
METHOD = f"/{PACKAGE}.Streaming/Stream"

# enum values
CODEC_UNSPECIFIED, OPUS, PCMA, PCMU, L16, FLAC = 0, 1, 2, 3, 4, 5
CONTACT, AGENT, BOT = 1, 2, 5
INBOUND, OUTBOUND = 1, 2

_F = descriptor_pb2.FieldDescriptorProto


def _enum(file: Any, name: str, values: list[tuple[str, int]]) -> None:
    enum = file.enum_type.add(name=name)
    for value_name, number in values:
        enum.value.add(name=value_name, number=number)


def _message(file: Any, name: str, fields: list[tuple[Any, ...]]) -> Any:
    """A message of ``(name, number, type[, type name[, label | "optional" | oneof]])``."""
    msg = file.message_type.add(name=name)
    for spec in fields:
        fname, number, kind = spec[:3]
        f = msg.field.add(name=fname, number=number, type=kind, label=_F.LABEL_OPTIONAL)
        if len(spec) > 3 and spec[3]:
            f.type_name = f".{PACKAGE}.{spec[3]}" if not spec[3].startswith(".") else spec[3]
        extra = spec[4] if len(spec) > 4 else None
        if extra == "repeated":
            f.label = _F.LABEL_REPEATED
        elif extra == "optional":  # proto3 optional: a synthetic oneof of its own
            f.proto3_optional = True
            f.oneof_index = len(msg.oneof_decl)
            msg.oneof_decl.add(name=f"_{fname}")
        elif isinstance(extra, int):  # member of the message's oneof number ``extra``
            f.oneof_index = extra
    return msg


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="nes2net_gateways/ringcx_streaming.proto", package=PACKAGE, syntax="proto3")
    _enum(file, "Codec", [("CODEC_UNSPECIFIED", 0), ("OPUS", 1), ("PCMA", 2), ("PCMU", 3),
                          ("L16", 4), ("FLAC", 5)])
    _enum(file, "ProductType", [("PRODUCT_TYPE_UNSPECIFIED", 0), ("QUEUE", 1),
                                ("CAMPAIGN", 2), ("IVR", 3)])
    _enum(file, "DialogType", [("DIALOG_TYPE_UNSPECIFIED", 0), ("INBOUND", 1),
                               ("OUTBOUND", 2)])
    _enum(file, "ParticipantType", [("PARTICIPANT_TYPE_UNSPECIFIED", 0), ("CONTACT", 1),
                                    ("AGENT", 2), ("BOT", 5)])
    S, U, E, M, B = _F.TYPE_STRING, _F.TYPE_UINT32, _F.TYPE_ENUM, _F.TYPE_MESSAGE, _F.TYPE_BYTES
    _message(file, "Account", [("id", 1, S), ("sub_account_id", 2, S), ("rc_account_id", 3, S)])
    _message(file, "Product", [("id", 1, S), ("type", 2, E, "ProductType")])
    dialog = _message(file, "Dialog", [
        ("id", 1, S), ("type", 2, E, "DialogType"), ("ani", 3, S, "", "optional"),
        ("dnis", 4, S, "", "optional"), ("language", 5, S, "", "optional"),
        ("attributes", 6, M, "Dialog.AttributesEntry", "repeated")])
    entry = dialog.nested_type.add(name="AttributesEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=S, label=_F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=S, label=_F.LABEL_OPTIONAL)
    _message(file, "Participant", [("id", 1, S), ("type", 2, E, "ParticipantType"),
                                   ("name", 3, S, "", "optional")])
    _message(file, "AudioFormat", [("codec", 1, E, "Codec"), ("rate", 2, U), ("ptime", 3, U)])
    _message(file, "AudioContent", [("payload", 1, B), ("seq", 2, U), ("duration", 3, U)])
    _message(file, "DialogInitEvent", [("account", 1, M, "Account"), ("dialog", 2, M, "Dialog")])
    _message(file, "SegmentStartEvent", [
        ("segment_id", 1, S), ("product", 2, M, "Product", "optional"),
        ("participant", 3, M, "Participant"),
        ("audio_format", 4, M, "AudioFormat", "optional")])
    _message(file, "SegmentMediaEvent", [("segment_id", 1, S),
                                         ("audio_content", 2, M, "AudioContent")])
    _message(file, "SegmentInfoEvent", [("segment_id", 1, S), ("event", 2, S),
                                        ("data", 3, S, "", "optional")])
    _message(file, "SegmentStopEvent", [("segment_id", 1, S)])
    event = _message(file, "StreamEvent", [
        ("session_id", 1, S), ("dialog_init", 2, M, "DialogInitEvent", 0),
        ("segment_start", 3, M, "SegmentStartEvent", 0),
        ("segment_media", 4, M, "SegmentMediaEvent", 0),
        ("segment_info", 5, M, "SegmentInfoEvent", 0),
        ("segment_stop", 6, M, "SegmentStopEvent", 0)])
    event.oneof_decl.add(name="event")
    return file


def _classes() -> dict[str, type[Any]]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())
    get = message_factory.GetMessageClass
    return {name: get(pool.FindMessageTypeByName(f"{PACKAGE}.{name}")) for name in (
        "StreamEvent", "DialogInitEvent", "SegmentStartEvent", "SegmentMediaEvent",
        "SegmentStopEvent", "SegmentInfoEvent", "Account", "Dialog", "Participant",
        "AudioFormat", "AudioContent", "Product")}


MESSAGES = _classes()
StreamEvent = MESSAGES["StreamEvent"]
#: the method's response
Empty = empty_pb2.Empty
