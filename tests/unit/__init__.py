"""Unit tier: no network; HTTP goes through `httpx.MockTransport`."""
