"""Bearer-key auth for every /v1 route: KCW_API_KEY, compared in constant time.

An empty key is allowed only when the API listens on loopback, where only this
machine's users can reach it; `check_bind` refuses to start otherwise.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable

from fastapi import Request

from worker.config import ApiSettings
from worker.errors import SettingsError, Unauthorized

__all__ = ["check_bind", "is_loopback", "require_key"]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(settings: ApiSettings) -> None:
    """Refuse to serve without a key on an address other machines can reach."""
    if not settings.kcw_api_key.get_secret_value() and not is_loopback(settings.api_host):
        raise SettingsError(
            f"API_HOST={settings.api_host} lets other machines reach the API, so KCW_API_KEY "
            "must be set (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(24))'`)."
        )


def require_key(settings: ApiSettings) -> Callable[[Request], None]:
    """A dependency that lets a request through only with `Authorization: Bearer <key>`."""
    key = settings.kcw_api_key.get_secret_value()

    def check(request: Request) -> None:
        if not key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise Unauthorized(
                "No API key given: send `Authorization: Bearer <KCW_API_KEY>` (the openai SDK "
                "sends its api_key that way).",
                code="missing_api_key",
            )
        if not secrets.compare_digest(given.strip().encode(), key.encode()):
            raise Unauthorized(
                "Incorrect API key: use the KCW_API_KEY that `kcw serve` was started with."
            )

    return check
