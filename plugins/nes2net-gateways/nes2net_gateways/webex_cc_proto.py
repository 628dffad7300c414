"""Webex Contact Center media forking messages (package ``com.cisco.wcc.ccai.media.v1``).

The wire format of Cisco's published schema (webex/dataSourceSchemas, Services/AudioForking,
``conversationaudioforking.proto`` and ``media_service_common.proto``): field numbers, types
and enum values as declared there, described here at run time with protobuf descriptors, so
no generated code and no protoc step. Enums live in this one file descriptor; on the wire an
enum is its number, so where they are declared does not matter.

Service ``ConversationAudio``, method ``StreamConversationAudio``: bidirectional streaming of
``ConversationAudioForkingRequest`` (client: Webex) and ``ConversationAudioForkingResponse``.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, timestamp_pb2

PACKAGE = "com.cisco.wcc.ccai.media.v1"
METHOD = f"/{PACKAGE}.ConversationAudio/StreamConversationAudio"

# enum values (media_service_common.proto)
ROLE_UNSPECIFIED, CALLER, AGENT = 0, 1, 2
ERROR_NONE, ERROR_INVALID_AUDIO_FORMAT, ERROR_STREAM_FAILURE = 0, 1, 2
ENCODING_UNSPECIFIED, LINEAR16, MULAW, ALAW = 0, 1, 2, 3

_F = descriptor_pb2.FieldDescriptorProto


def _field(msg: Any, name: str, number: int, kind: int, type_name: str = "",
           label: int = _F.LABEL_OPTIONAL) -> None:
    f = msg.field.add(name=name, number=number, type=kind, label=label)
    if type_name:
        f.type_name = type_name


def _enum(file: Any, name: str, values: list[tuple[str, int]]) -> None:
    enum = file.enum_type.add(name=name)
    for value_name, number in values:
        enum.value.add(name=value_name, number=number)


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="nes2net_gateways/webex_cc_media.proto", package=PACKAGE, syntax="proto3",
        dependency=["google/protobuf/timestamp.proto"])
    _enum(file, "ParticipantRole", [("ROLE_UNSPECIFIED", 0), ("CALLER", 1), ("AGENT", 2)])
    _enum(file, "ErrorCode", [("ERROR_NONE", 0), ("ERROR_INVALID_AUDIO_FORMAT", 1),
                              ("ERROR_STREAM_FAILURE", 2)])
    _enum(file, "AudioEncoding", [("UNSPECIFIED", 0), ("LINEAR16", 1), ("MULAW", 2),
                                  ("ALAW", 3)])
    p = f".{PACKAGE}."
    audio = file.message_type.add(name="AudioStream")
    _field(audio, "audio_data", 1, _F.TYPE_BYTES)
    _field(audio, "encoding", 2, _F.TYPE_ENUM, p + "AudioEncoding")
    _field(audio, "sample_rate_hertz", 3, _F.TYPE_INT32)
    _field(audio, "audio_timestamp", 4, _F.TYPE_MESSAGE, ".google.protobuf.Timestamp")
    _field(audio, "role", 5, _F.TYPE_ENUM, p + "ParticipantRole")
    _field(audio, "role_id", 6, _F.TYPE_STRING)
    request = file.message_type.add(name="ConversationAudioForkingRequest")
    _field(request, "conversation_id", 1, _F.TYPE_STRING)
    _field(request, "customer_org_id", 2, _F.TYPE_STRING)
    _field(request, "audio", 3, _F.TYPE_MESSAGE, p + "AudioStream")
    entry = request.nested_type.add(name="AdditionalInfoEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, _F.TYPE_STRING)
    _field(entry, "value", 2, _F.TYPE_STRING)
    _field(request, "additional_info", 4, _F.TYPE_MESSAGE,
           p + "ConversationAudioForkingRequest.AdditionalInfoEntry", _F.LABEL_REPEATED)
    response = file.message_type.add(name="ConversationAudioForkingResponse")
    _field(response, "status_message", 1, _F.TYPE_STRING)
    _field(response, "error_code", 2, _F.TYPE_ENUM, p + "ErrorCode")
    return file


def _classes() -> tuple[type[Any], type[Any], type[Any]]:
    pool = descriptor_pool.DescriptorPool()
    stamp = descriptor_pb2.FileDescriptorProto()
    timestamp_pb2.DESCRIPTOR.CopyToProto(stamp)
    pool.Add(stamp)
    pool.Add(_file())
    get = message_factory.GetMessageClass
    return (get(pool.FindMessageTypeByName(f"{PACKAGE}.ConversationAudioForkingRequest")),
            get(pool.FindMessageTypeByName(f"{PACKAGE}.ConversationAudioForkingResponse")),
            get(pool.FindMessageTypeByName(f"{PACKAGE}.AudioStream")))


ForkingRequest, ForkingResponse, AudioStream = _classes()
