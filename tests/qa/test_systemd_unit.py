"""The shipped systemd unit and example configuration: settings that matter, and the syntax traps."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from bridge.errors import ExitCode
from bridge.settings import (
    AccountSettings,
    DocumentSettings,
    HttpSettings,
    InboundSettings,
    MailSettings,
    RelaySettings,
    RetentionSettings,
    Settings,
    SmtpSettings,
    StoreSettings,
    WorkerSettings,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "faxbridge.service"
EXAMPLE_TOML = ROOT / "config" / "faxbridge.example.toml"
EXAMPLE_ENV = ROOT / "config" / "faxbridge.env.example"

HARDENING = {
    "NoNewPrivileges": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
    "RestrictNamespaces": "yes",
    "RestrictRealtime": "yes",
    "RestrictSUIDSGID": "yes",
    "LockPersonality": "yes",
    "SystemCallArchitectures": "native",
    "SystemCallErrorNumber": "EPERM",
    "UMask": "0077",
}


def _read_unit() -> configparser.ConfigParser:
    # strict=False: systemd allows a key more than once (SystemCallFilter=…); configparser keeps the last.
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT, encoding="utf-8")
    return parser


def _all_values(key: str) -> list[str]:
    """Every value of ``key`` in the unit, in order (configparser only keeps the last one)."""
    return [
        line.split("=", 1)[1] for line in UNIT.read_text(encoding="utf-8").splitlines() if line.startswith(f"{key}=")
    ]


@pytest.fixture(scope="module")
def unit() -> configparser.ConfigParser:
    return _read_unit()


def test_sections(unit: configparser.ConfigParser) -> None:
    assert unit.sections() == ["Unit", "Service", "Install"]
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_notify_type_and_restart_policy(unit: configparser.ConfigParser) -> None:
    service = unit["Service"]

    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"] == "78"
    assert service["KillMode"] == "mixed"
    assert service["WatchdogSec"] == "60s"
    assert service["TimeoutStopSec"]


def test_exit_code_78_is_the_config_error_code() -> None:
    assert int(ExitCode.CONFIG) == 78


def test_execstart_runs_serve_with_the_config(unit: configparser.ConfigParser) -> None:
    argv = shlex.split(unit["Service"]["ExecStart"])

    assert argv[0] == "/usr/bin/faxbridge"
    assert argv[1] == "serve"
    assert argv[2:] == ["--config", "/etc/faxbridge/faxbridge.toml"]
    assert unit["Unit"]["ConditionPathExists"] == "/etc/faxbridge/faxbridge.toml"


def test_user_and_directories(unit: configparser.ConfigParser) -> None:
    service = unit["Service"]

    assert service.get("DynamicUser") == "yes" or service.get("User") == "faxbridge"
    assert service["StateDirectory"] == "faxbridge"
    assert service["ConfigurationDirectory"] == "faxbridge"
    assert service["WorkingDirectory"] == "/var/lib/faxbridge"
    assert service["SyslogIdentifier"] == "faxbridge"


def test_state_directory_matches_the_default_state_dir(unit: configparser.ConfigParser) -> None:
    assert Path("/var/lib") / unit["Service"]["StateDirectory"] == Settings.model_fields["state_dir"].default


@pytest.mark.parametrize(("key", "value"), HARDENING.items())
def test_hardening(unit: configparser.ConfigParser, key: str, value: str) -> None:
    assert unit["Service"][key] == value


def test_system_call_filter(unit: configparser.ConfigParser) -> None:
    filters = _all_values("SystemCallFilter")

    assert filters[0] == "@system-service"
    # The conversion sandbox limits its children with setrlimit(), which lives in @resources.
    assert not any("@resources" in value for value in filters)


def test_no_capabilities_by_default(unit: configparser.ConfigParser) -> None:
    assert _all_values("CapabilityBoundingSet") == [""]
    assert unit["Service"].get("AmbientCapabilities", "") == ""


def test_resource_limits(unit: configparser.ConfigParser) -> None:
    assert re.fullmatch(r"\d+[KMGT]?", unit["Service"]["MemoryMax"])
    assert int(unit["Service"]["TasksMax"]) > 0


def test_no_value_carries_a_trailing_comment(unit: configparser.ConfigParser) -> None:
    # systemd has no trailing comments: "Restart=on-failure # why" makes "# why" part of the value.
    for section in unit.sections():
        for key, value in unit[section].items():
            assert "#" not in value, f"[{section}] {key}={value!r}: comments go on their own line"
    for number, line in enumerate(UNIT.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.startswith(("#", ";")):
            assert "#" not in line, f"line {number}: {line!r}"


def test_commented_out_options_are_well_formed() -> None:
    # The commented options are meant to be uncommented as they are: they must parse too.
    options = [
        line[1:] for line in UNIT.read_text(encoding="utf-8").splitlines() if re.match(r"#[A-Z][A-Za-z]+=", line)
    ]

    assert options
    for option in options:
        assert "#" not in option


def _verifiable_copy(tmp_path: Path) -> Path:
    # verify insists that ExecStart's binary exists; /usr/bin/faxbridge is there only once the package is
    # installed. Everything else is checked exactly as shipped.
    executable = shutil.which("true")
    assert executable is not None
    text = UNIT.read_text(encoding="utf-8").replace("ExecStart=/usr/bin/faxbridge ", f"ExecStart={executable} ")
    copy = tmp_path / "faxbridge.service"
    copy.write_text(text, encoding="utf-8")
    return copy


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(_verifiable_copy(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "faxbridge.service" not in result.stderr, result.stderr


def test_systemd_analyze_security(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    result = subprocess.run(
        # --threshold is the exposure level times ten; 2.5 keeps the unit in the "OK" band.
        [analyze, "security", "--offline=yes", "--threshold=25", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("this systemd-analyze cannot score unit files offline (systemd < 250)")

    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


# The example configuration.


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("FAXBRIDGE_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_example_config_loads(clean_environment: pytest.MonkeyPatch) -> None:
    settings = load_settings(EXAMPLE_TOML)

    assert settings.state_dir == Path("/var/lib/faxbridge")
    assert settings.mail.relay is not None
    assert (settings.mail.relay.host, settings.mail.relay.port) == ("localhost", 25)
    assert settings.mail.maildir is None
    assert settings.providers["local"]["type"] == "local"
    assert [account.provider for account in settings.accounts] == ["local"]
    assert settings.store_url == "sqlite:////var/lib/faxbridge/faxbridge.db"


def test_example_config_holds_no_secrets(clean_environment: pytest.MonkeyPatch) -> None:
    settings = load_settings(EXAMPLE_TOML)

    assert settings.mail.relay is not None
    assert settings.mail.relay.password is None
    assert settings.mail.relay.password_file is None
    assert settings.store.url is None


def test_example_config_repeats_the_defaults(clean_environment: pytest.MonkeyPatch) -> None:
    # Written-out defaults must be the real ones; the comment names the default where a value differs.
    settings = load_settings(EXAMPLE_TOML)
    deliberate = {("mail", "from_address"), ("mail.relay", "starttls"), ("mail.relay", "host")}

    cases: list[tuple[str, type[BaseModel], BaseModel | None]] = [
        ("smtp", SmtpSettings, settings.smtp),
        ("store", StoreSettings, settings.store),
        ("worker", WorkerSettings, settings.worker),
        ("mail.relay", RelaySettings, settings.mail.relay),
        ("accounts", AccountSettings, settings.accounts[0]),
    ]
    for section, model, loaded in cases:
        for name, field in model.model_fields.items():
            if field.is_required() or (section, name) in deliberate or field.default_factory is not None:
                continue
            assert getattr(loaded, name) == field.default, f"{section}.{name}"
    assert settings.log_level == Settings.model_fields["log_level"].default


def _keys_by_section(text: str) -> dict[str, set[str]]:
    """Keys per TOML section, counting commented-out ``#key = value`` lines as present."""
    found: dict[str, set[str]] = {"": set()}
    section = ""
    for line in text.splitlines():
        header = re.fullmatch(r"\[\[?([\w.]+)\]\]?", line.strip())
        if header:
            section = header.group(1)
            found.setdefault(section, set())
            continue
        key = re.match(r"#?([a-z_]+) = ", line)
        if key:
            found[section].add(key.group(1))
    return found


def _field_names(model: type[BaseModel], *, skip: set[str] | None = None) -> set[str]:
    return set(model.model_fields) - (skip or set())


def test_example_config_lists_every_setting() -> None:
    found = _keys_by_section(EXAMPLE_TOML.read_text(encoding="utf-8"))
    sections = {
        "smtp", "store", "worker", "documents", "inbound", "http", "retention", "mail", "providers", "accounts",
        "config_file",
    }  # fmt: skip
    expected: dict[str, set[str]] = {
        "": _field_names(Settings, skip=sections),
        "smtp": _field_names(SmtpSettings),
        "store": _field_names(StoreSettings),
        "worker": _field_names(WorkerSettings),
        "documents": _field_names(DocumentSettings),
        "inbound": _field_names(InboundSettings),
        "http": _field_names(HttpSettings),
        "retention": _field_names(RetentionSettings),
        "mail": _field_names(MailSettings, skip={"relay"}),
        "mail.relay": _field_names(RelaySettings),
        "accounts": _field_names(AccountSettings),
    }

    for section, names in expected.items():
        assert names <= found.get(section, set()), f"[{section}] misses {names - found.get(section, set())}"
    assert "providers.local" in found


def _env_example_lines() -> list[Any]:
    params = []
    for line in EXAMPLE_ENV.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"#(FAXBRIDGE_[A-Z0-9_]+)=(.*)", line)
        if match:
            params.append(pytest.param(match.group(1), match.group(2), id=match.group(1)))
    return params


def _lookup(settings: Settings, path: list[str]) -> Any:
    value: Any = settings
    for part in path:
        value = getattr(value, part)
    return value


@pytest.mark.parametrize(("name", "value"), _env_example_lines())
def test_env_example_overrides_a_real_setting(clean_environment: pytest.MonkeyPatch, name: str, value: str) -> None:
    clean_environment.setenv(name, value)

    settings = load_settings(EXAMPLE_TOML)

    if name == "FAXBRIDGE_CONFIG":
        return
    # Unknown top-level FAXBRIDGE_* names are silently ignored by pydantic-settings: check the name is real.
    path = name.removeprefix("FAXBRIDGE_").lower().split("__")
    assert _lookup(settings, path) is not None


def test_env_override_merges_into_the_file(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("FAXBRIDGE_MAIL__RELAY__PORT", "587")
    clean_environment.setenv("FAXBRIDGE_SMTP__LISTEN_PORT", "2526")

    settings = load_settings(EXAMPLE_TOML)

    assert settings.smtp.listen_port == 2526
    assert settings.mail.relay is not None
    assert (settings.mail.relay.host, settings.mail.relay.port) == ("localhost", 587)
    assert settings.mail.relay.starttls == "never"


def test_execstart_command_line_is_accepted_by_the_cli(
    unit: configparser.ConfigParser, tmp_path: Path, clean_environment: pytest.MonkeyPatch
) -> None:
    # The unit's arguments, with the configuration pointing at a file that does not exist: a CLI that
    # understands them stops at the missing file with the configuration exit code (78, which systemd does
    # not restart); one that does not understand them exits 64 (usage), and systemd would restart it in a
    # loop.
    from bridge.cli import main

    argv = shlex.split(unit["Service"]["ExecStart"])[1:]
    argv[argv.index("--config") + 1] = str(tmp_path / "missing.toml")

    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == ExitCode.CONFIG, f"faxbridge {shlex.join(argv)} exited with {code}, not 78"
