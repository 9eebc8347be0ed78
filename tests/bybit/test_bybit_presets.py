"""URL presets: argument > environment > mainnet."""

from __future__ import annotations

import pytest

from hubkit.bybit import presets


def test_mainnet_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(presets.REST_URL_ENV, raising=False)
    monkeypatch.delenv(presets.WS_URL_ENV, raising=False)
    assert presets.rest_url() == "https://api.bybit.com"
    assert presets.ws_url() == "wss://stream.bybit.com/v5/public/linear"
    assert presets.ws_url("spot") == "wss://stream.bybit.com/v5/public/spot"


def test_environment_overrides_mainnet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(presets.REST_URL_ENV, "http://127.0.0.1:9000/")
    monkeypatch.setenv(presets.WS_URL_ENV, "ws://127.0.0.1:9000/v5/public")
    assert presets.rest_url() == "http://127.0.0.1:9000"
    assert presets.ws_url("option") == "ws://127.0.0.1:9000/v5/public/option"


def test_argument_overrides_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(presets.REST_URL_ENV, "http://127.0.0.1:9000")
    monkeypatch.setenv(presets.WS_URL_ENV, "ws://127.0.0.1:9000/v5/public")
    assert presets.rest_url("http://127.0.0.1:1") == "http://127.0.0.1:1"
    assert presets.ws_url("inverse", "ws://127.0.0.1:2/v5/public/") == (
        "ws://127.0.0.1:2/v5/public/inverse"
    )
    # a full stream URL is accepted as is
    assert presets.ws_url("linear", "ws://h:1/v5/public/linear") == "ws://h:1/v5/public/linear"


def test_unknown_category_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown ByBit category"):
        presets.ws_url("futures")


def test_every_public_name_of_the_provider_package_resolves() -> None:
    import hubkit.bybit as package

    for name in package.__all__:
        assert getattr(package, name) is not None, name
    with pytest.raises(AttributeError, match="no_such_name"):
        package.no_such_name  # type: ignore[attr-defined]  # noqa: B018
