"""Configuration loading: the embedded default, environment overrides, and errors that name key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.settings import load_settings
from tests.conftest import DEFAULT_CONFIG


def test_embedded_default_is_what_the_readme_promises() -> None:
    settings = load_settings(DEFAULT_CONFIG)
    assert settings.smtp.listen_host == "127.0.0.1"
    assert settings.smtp.listen_port == 2525
    assert settings.fax_domains == ["fax.localhost"]
    assert settings.state_dir == Path("var").resolve()
    assert settings.store_url.endswith(str(Path("var").resolve() / "faxbridge.db"))
    assert settings.store_url.startswith("sqlite")
    assert settings.providers["local"]["type"] == "local"
    assert settings.path(settings.providers["local"]["outbox"]) == Path("var/outbox").resolve()
    assert settings.mail.maildir is not None
    assert settings.path(settings.mail.maildir) == Path("var/mail").resolve()
    [account] = settings.accounts
    assert account.allowed_senders == ["demo@example.com"]
    assert account.country == "DE"


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAXBRIDGE_SMTP__LISTEN_PORT", "2600")
    monkeypatch.setenv("FAXBRIDGE_LOG_LEVEL", "DEBUG")
    settings = load_settings(DEFAULT_CONFIG)
    assert settings.smtp.listen_port == 2600
    assert settings.log_level == "DEBUG"
    assert settings.smtp.hostname == "faxbridge.localhost"


def test_config_path_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAXBRIDGE_CONFIG", str(DEFAULT_CONFIG))
    assert load_settings().config_file == DEFAULT_CONFIG.resolve()


def test_invalid_value_names_key_file_and_expectation(tmp_path: Path) -> None:
    text = DEFAULT_CONFIG.read_text().replace("listen_port = 2525", 'listen_port = "many"')
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert str(path) in message
    assert "smtp.listen_port" in message
    assert "integer" in message
    assert "'many'" in message


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(DEFAULT_CONFIG.read_text().replace("[smtp]", "[smtp]\nlisten_prot = 25"))
    with pytest.raises(ConfigError, match=r"smtp\.listen_prot"):
        load_settings(path)


def test_account_naming_a_missing_provider(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(DEFAULT_CONFIG.read_text().replace('provider = "local"', 'provider = "ifax"'))
    with pytest.raises(ConfigError, match=r"accounts\[0\]\.provider 'ifax' has no \[providers\.ifax\]"):
        load_settings(path)


def test_unknown_country(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(DEFAULT_CONFIG.read_text().replace('country = "DE"', 'country = "XX"'))
    with pytest.raises(ConfigError, match=r"accounts\.0\.country"):
        load_settings(path)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[smtp\nlisten_port = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


def test_mail_needs_exactly_one_destination(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(DEFAULT_CONFIG.read_text().replace('maildir = "mail"', ""))
    with pytest.raises(ConfigError, match=r"exactly one of mail\.maildir"):
        load_settings(path)


def test_allowed_networks_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        DEFAULT_CONFIG.read_text().replace('country = "DE"', 'country = "DE"\nallowed_networks = ["10.0.0.0/33"]')
    )
    with pytest.raises(ConfigError, match=r"accounts\.0\.allowed_networks\.0"):
        load_settings(path)
    path.write_text(
        DEFAULT_CONFIG.read_text().replace(
            'country = "DE"', 'country = "DE"\nallowed_networks = ["10.1.2.0/24", "::1"]'
        )
    )
    [account] = load_settings(path).accounts
    assert [str(n) for n in account.allowed_networks] == ["10.1.2.0/24", "::1/128"]


def test_requiring_authentication_needs_an_authserv_id(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        DEFAULT_CONFIG.read_text().replace('country = "DE"', 'country = "DE"\nrequire_authentication = true')
    )
    with pytest.raises(ConfigError, match=r"require_authentication needs smtp\.authserv_id"):
        load_settings(path)


def test_retention_zero_keeps_for_ever(tmp_path: Path) -> None:
    from bridge.settings import RetentionSettings

    kept = RetentionSettings.model_validate({"documents_days": 0, "messages_days": 30})
    assert kept.documents_days is None
    assert kept.messages_days == 30
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        RetentionSettings.model_validate({"documents_days": -1})
