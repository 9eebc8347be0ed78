from __future__ import annotations

import hubkit
import hubkit.errors


def test_every_error_is_a_hubkit_error_and_every_warning_a_hubkit_warning() -> None:
    for name in hubkit.errors.__all__:
        obj = getattr(hubkit.errors, name)
        if issubclass(obj, Warning):
            assert issubclass(obj, hubkit.errors.HubkitWarning), name
        else:
            assert issubclass(obj, hubkit.HubkitError), name
            assert getattr(hubkit, name) is obj, f"hubkit.{name} is not re-exported"


def test_protocol_error_temporary_follows_status() -> None:
    assert hubkit.ProtocolError("boom", status=503).temporary
    assert hubkit.ProtocolError("slow down", status=429).temporary
    assert not hubkit.ProtocolError("bad request", status=400).temporary
    assert not hubkit.Rejected("no").temporary
    assert hubkit.RateLimited("wait", retry_after=1.5).retry_after == 1.5
