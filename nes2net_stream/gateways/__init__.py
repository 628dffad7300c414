"""Gateway plugins: provider protocols turned into the internal call events."""

from nes2net_stream.gateways.api import (
    CallHandle,
    Gateway,
    GatewayConfig,
    HandshakeRejected,
)

__all__ = ["CallHandle", "Gateway", "GatewayConfig", "HandshakeRejected"]
