"""What the gateways reading Kinesis Video Streams share: settings, the KVS client, the API.

Amazon Connect (``amazon_connect``) and Chime SDK Voice Connectors (``chime_voice_connector``)
both put call audio into Kinesis Video streams that the service reads with GetMedia; calls are
registered through a control API (:mod:`nes2net_gateways._control_api`). AWS credentials come
from the standard chain (botocore) and are never logged.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from nes2net_gateways._common import check_roles
from nes2net_gateways._control_api import ControlApiConfig, RegisteredCallsGateway
from nes2net_gateways.kvs import KvsClient
from nes2net_stream.errors import ConfigError
from nes2net_stream.gateways.api import GatewayConfig
from nes2net_stream.service.errors import ProtocolError


class KvsGatewayConfig(ControlApiConfig):
    """Settings of a gateway that reads Kinesis Video streams (beside the control API's)."""

    endpoint_url: str = ""
    aws_profile: str = ""
    allowed_stream_arns: list[str] = Field(default_factory=list)
    media_timeout_s: float = Field(10.0, gt=0.0, le=3600.0)
    max_reconnects: int = Field(3, ge=0, le=100)


class KvsGateway(RegisteredCallsGateway):
    """A gateway whose registered calls read Kinesis Video streams (see the module docstring)."""

    transport = "custom"

    def __init__(self, config: GatewayConfig, ctx: Any, *, auth_required: bool):
        super().__init__(config, ctx, auth_required=auth_required)
        self.cfg: KvsGatewayConfig = config  # type: ignore[assignment]
        self.kvs: Any = None
        self.setup_api()

    def check_config(self) -> None:
        """Validate the token, the roles and the endpoint; load botocore."""
        check_roles(self.cfg, self.name)
        self.api.check()
        url = self.cfg.endpoint_url
        if url and not url.startswith(("https://", "http://")):
            raise ConfigError(f"gateways.{self.name}.endpoint_url: must be an http(s) URL")
        self.kvs = KvsClient(url, self.cfg.aws_profile, f"gateways.{self.name}")

    def check_stream(self, arn: str) -> None:
        """ProtocolError ``unauthorized`` for a stream outside ``allowed_stream_arns``."""
        allowed = self.cfg.allowed_stream_arns
        if allowed and not any(arn.startswith(prefix) for prefix in allowed):
            raise ProtocolError("unauthorized", "the stream is not in allowed_stream_arns")

    async def close(self) -> None:
        """End the calls and stop the control API, then close the KVS client."""
        await super().close()
        if self.kvs is not None:
            await self.kvs.close()
