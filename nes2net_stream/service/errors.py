"""Protocol errors sent to clients: an error event with a code, then a WebSocket close code.

Close codes follow HTTP status numbers in the application range (4000-4999) so they read at a
glance; 1000/1001/1011 keep their standard meanings.
"""

from __future__ import annotations

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL = 1011

#: error code -> (close code, short explanation)
ERROR_CODES: dict[str, tuple[int, str]] = {
    "bad_json": (4400, "a text message is not valid JSON"),
    "bad_message": (4400, "a message is missing fields, has unknown fields or wrong types"),
    "unknown_message": (4400, "unknown message type"),
    "audio_before_start": (4400, "binary audio arrived before the start message"),
    "bad_audio_frame": (4400, "audio bytes are not a whole number of sample frames"),
    "unauthorized": (4401, "missing or invalid credentials"),
    "start_timeout": (4408, "no start message in time"),
    "idle_timeout": (4408, "no message for too long"),
    "duplicate_call_id": (4409, "a call with this call_id is already active"),
    "frame_too_large": (4413, "message larger than the configured limit"),
    "call_too_long": (4413, "the call exceeded the maximum duration"),
    "unsupported_format": (4415, "unsupported encoding, sample rate or channel layout"),
    "too_many_calls": (4429, "the service is at its concurrent-call limit"),
    "rate_limited": (4429, "audio arrives faster than the allowed real-time factor"),
    "shutting_down": (1001, "the service is shutting down"),
    "internal_error": (1011, "internal error"),
}


class ProtocolError(Exception):
    """An error attributable to one connection; carries the code sent to the client."""

    def __init__(self, code: str, message: str):
        if code not in ERROR_CODES:
            raise ValueError(f"unknown protocol error code {code!r}")
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def close_code(self) -> int:
        """WebSocket close code for this error."""
        return ERROR_CODES[self.code][0]

    def to_event(self) -> dict[str, object]:
        """The JSON error event sent before closing."""
        return {"type": "error", "code": self.code, "message": self.message,
                "close_code": self.close_code}
