"""Container health check: exit 0 when the service's ``/readyz`` answers 200, else 1.

Reads the same configuration as the service (``$NES2NET_CONFIG`` and ``NES2NET_*`` variables)
to find the port and whether TLS is on; ``NES2NET_HEALTHCHECK_URL`` overrides the URL.
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request

LOOPBACK_FOR = {"", "0.0.0.0", "::", "127.0.0.1", "localhost", "::1"}


def readyz_url() -> str:
    """The URL of ``/readyz`` as seen from inside the container."""
    explicit = os.environ.get("NES2NET_HEALTHCHECK_URL")
    if explicit:
        return explicit
    from nes2net_stream.config import load_settings

    server = load_settings(None).server
    host = "127.0.0.1" if server.host in LOOPBACK_FOR else server.host
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if server.tls_cert else "http"
    return f"{scheme}://{host}:{server.port}/readyz"


def check(url: str, timeout: float = 4.0) -> tuple[bool, str]:
    """GET ``url``; (True, body) on HTTP 200."""
    context = None
    if url.startswith("https:"):  # the certificate names the public host, not loopback
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as resp:
            return resp.status == 200, resp.read(2048).decode(errors="replace").strip()
    except urllib.error.HTTPError as exc:
        return False, exc.read(2048).decode(errors="replace").strip()
    except (OSError, ValueError) as exc:
        return False, str(exc)


def main() -> int:
    """Print the answer and return the exit code for Docker."""
    try:
        url = readyz_url()
    except Exception as exc:  # noqa: BLE001 - a bad configuration means "unhealthy"
        print(f"unhealthy: {exc}")
        return 1
    ok, body = check(url)
    print(f"{'healthy' if ok else 'unhealthy'}: {url} {body}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
