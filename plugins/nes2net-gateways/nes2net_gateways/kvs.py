"""Kinesis Video Streams' media API, as far as reading a live stream needs it.

Two calls, both JSON POSTs signed with AWS Signature Version 4 (service ``kinesisvideo``):
``getDataEndpoint`` on the regional control endpoint names the host that serves a stream's
media, and ``getMedia`` there answers with the stream's MKV fragments as they are ingested,
from a start selector (``NOW``, ``FRAGMENT_NUMBER`` with ``AfterFragmentNumber``, or the
``CONTINUATION_TOKEN`` a previous answer ended with). Signing and credentials come from
botocore (the ``aws`` extra): the standard chain of environment variables, shared
configuration and profiles, web identity (EKS service accounts), container and instance
roles, refreshed as they expire.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from nes2net_stream.errors import ConfigError
from nes2net_stream.service.errors import ProtocolError

SERVICE = "kinesisvideo"


def region_of(stream_arn: str) -> str:
    """The region of a stream ARN (``arn:aws:kinesisvideo:<region>:<account>:stream/...``)."""
    parts = stream_arn.split(":")
    if len(parts) < 6 or parts[0] != "arn" or parts[2] != SERVICE or not parts[3]:
        raise ValueError(f"not a Kinesis Video stream ARN: {stream_arn[:120]!r}")
    return parts[3]


def check_stream_arn(value: Any, what: str) -> str:
    """A Kinesis Video stream ARN; ProtocolError ``bad_message`` naming ``what`` otherwise."""
    try:
        region_of(value if isinstance(value, str) else "")
    except ValueError as exc:
        raise ProtocolError("bad_message", f"{what}: {exc}") from None
    return value


def check_fragment_number(value: Any, what: str) -> str | None:
    """An optional fragment number (a string of digits); ProtocolError otherwise."""
    if value is not None and not (isinstance(value, str) and value.isdigit()
                                  and len(value) <= 64):
        raise ProtocolError("bad_message", f"{what} must be a string of digits")
    return value


class KvsError(Exception):
    """A Kinesis Video Streams request failed (HTTP status and AWS's message)."""

    def __init__(self, status: int, message: str):
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class KvsClient:
    """Signed requests to Kinesis Video Streams (see the module docstring).

    Args:
        endpoint_url: the control endpoint; "" for ``https://kinesisvideo.<region>.amazonaws.com``
            (set it for VPC endpoints or a test server).
        profile: a named profile of the shared AWS configuration; "" for the default chain.
        section: the settings section named by a configuration error.
    """

    def __init__(self, endpoint_url: str = "", profile: str = "",
                 section: str = "gateways.amazon_connect"):
        try:
            import botocore.session
        except ImportError:
            raise ConfigError(f"{section}: needs botocore (install "
                              "nes2net-gateways[aws])") from None
        self.endpoint_url = endpoint_url.rstrip("/")
        self._session = botocore.session.Session(profile=profile or None)
        self._credentials: Any = None
        self._http: aiohttp.ClientSession | None = None

    async def _signed(self, url: str, region: str, data: bytes) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        if self._credentials is None:  # may read files or query a metadata service
            self._credentials = await asyncio.to_thread(self._session.get_credentials)
            if self._credentials is None:
                raise KvsError(401, "no AWS credentials found (environment, profile, role)")
        frozen = await asyncio.to_thread(self._credentials.get_frozen_credentials)
        request = AWSRequest(method="POST", url=url, data=data,
                             headers={"Content-Type": "application/json"})
        SigV4Auth(frozen, SERVICE, region).add_auth(request)
        return dict(request.headers.items())

    async def _post(self, url: str, region: str, body: dict[str, Any]) -> aiohttp.ClientResponse:
        if self._http is None:
            # every call holds a GetMedia answer open for as long as it lasts: no pool limit
            # (aiohttp's default of 100 connections stalled the 101st call); [limits] max_calls
            # bounds them
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10))
        data = json.dumps(body).encode()
        resp = await self._http.post(url, data=data,
                                     headers=await self._signed(url, region, data))
        if resp.status != 200:
            text = (await resp.text())[:300]
            resp.release()
            raise KvsError(resp.status, text)
        return resp

    async def data_endpoint(self, stream_arn: str) -> str:
        """The endpoint serving GetMedia for ``stream_arn``."""
        region = region_of(stream_arn)
        base = self.endpoint_url or f"https://{SERVICE}.{region}.amazonaws.com"
        resp = await self._post(f"{base}/getDataEndpoint", region,
                                {"APIName": "GET_MEDIA", "StreamARN": stream_arn})
        async with resp:
            doc = await resp.json(content_type=None)
        endpoint = doc.get("DataEndpoint") if isinstance(doc, dict) else None
        if not isinstance(endpoint, str) or not endpoint.startswith(("https://", "http://")):
            raise KvsError(502, "getDataEndpoint answered no DataEndpoint")
        return endpoint.rstrip("/")

    @asynccontextmanager
    async def get_media(self, endpoint: str, stream_arn: str, selector: dict[str, Any]
                        ) -> Any:
        """The streaming answer of GetMedia (``async with``; read ``.content``)."""
        resp = await self._post(f"{endpoint}/getMedia", region_of(stream_arn),
                                {"StreamARN": stream_arn, "StartSelector": selector})
        try:
            yield resp
        finally:
            resp.release()

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._http is not None:
            await self._http.close()
