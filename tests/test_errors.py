from __future__ import annotations

import hubkit


def test_every_error_is_a_hubkit_error() -> None:
    for name in hubkit.errors.__all__:
        assert issubclass(getattr(hubkit, name), hubkit.HubkitError), name


def test_protocol_error_temporary_follows_status() -> None:
    assert hubkit.ProtocolError("boom", status=503).temporary
    assert hubkit.ProtocolError("slow down", status=429).temporary
    assert not hubkit.ProtocolError("bad request", status=400).temporary
    assert not hubkit.Rejected("no").temporary
    assert hubkit.RateLimited("wait", retry_after=1.5).retry_after == 1.5
