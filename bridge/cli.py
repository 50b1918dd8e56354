"""The ``faxbridge`` command line.

Exit codes follow sysexits.h (see ``bridge.errors.ExitCode``): 0 success, 64 usage, 65 bad input, 66 no such
job or file, 69 a service unavailable, 70 internal error, 75 temporary failure, 78 configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import mimetypes
import sys
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import NoReturn, TextIO

from bridge import __version__
from bridge._logging import setup_logging
from bridge.errors import BridgeError, ConfigError, ExitCode
from bridge.intake import build_request
from bridge.models import FaxJob, JobState
from bridge.routing import Router, format_number
from bridge.settings import Settings, load_settings
from bridge.stores import open_store
from bridge.stores.base import JobStore


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    config_help = "configuration file (default: $FAXBRIDGE_CONFIG, then /etc/faxbridge/faxbridge.toml)"
    parser = _Parser(prog="faxbridge", description="SMTP bridge between email and fax.")
    parser.add_argument("--version", action="version", version=f"faxbridge {__version__}")
    parser.add_argument("--config", "-c", help=config_help)
    # --config is also taken after the subcommand (`faxbridge serve --config FILE`, as in the systemd unit);
    # SUPPRESS keeps a subcommand without it from overwriting the value given before.
    common = _Parser(add_help=False)
    common.add_argument("--config", "-c", default=argparse.SUPPRESS, help=config_help)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    commands.add_parser("serve", parents=[common], help="run the bridge in the foreground until SIGTERM or SIGINT")
    commands.add_parser("check", parents=[common], help="validate the configuration and print what it sets up")

    send = commands.add_parser("send", parents=[common], help="queue one fax from files, without SMTP")
    send.add_argument("--to", required=True, help="fax number: +4930123456, 004930123456 or 030123456")
    send.add_argument("--from", dest="sender", help="sender address (default: the account's first allowed sender)")
    send.add_argument("--account", help="account name (default: the first account)")
    send.add_argument("--subject", default="", help="subject, used in the notice")
    send.add_argument("--text", default="", help="a message printed on the first page")
    send.add_argument("files", nargs="*", type=Path, help="PDF, JPEG, PNG or text files, faxed in this order")

    jobs = commands.add_parser("jobs", parents=[common], help="list jobs, or show one")
    jobs_cmd = jobs.add_subparsers(dest="jobs_command", parser_class=_Parser)
    listing = jobs_cmd.add_parser("list", parents=[common], help="list jobs, newest first (the default)")
    for target in (jobs, listing):
        target.add_argument("--state", action="append", choices=[s.value for s in JobState], help="only this state")
        target.add_argument("--limit", type=int, default=50)
        target.add_argument("--json", action="store_true", help="one JSON object per line")
    show = jobs_cmd.add_parser("show", parents=[common], help="show one job in full")
    show.add_argument("job_id")

    commands.add_parser("inbox", parents=[common], help="list incoming faxes the providers hold")

    fake = commands.add_parser(
        "fake-provider", help="run a fake of a fax service's API on this machine, to try a configuration"
    )
    fake.add_argument("name", help="the provider type: " + ", ".join(_fake_names()))
    fake.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    fake.add_argument("--port", type=int, default=8099, help="port to listen on (default 8099)")
    fake.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the fake (its credentials, for instance; VALUE may be JSON); see the fake's docstring",
    )

    secrets = commands.add_parser("secrets", parents=[common], help="Mail2Fax secret keys of an account")
    secrets_cmd = secrets.add_subparsers(dest="secrets_command", required=True, parser_class=_Parser)
    shown = secrets_cmd.add_parser("show", parents=[common], help="state, last and next renewal (never the key)")
    shown.add_argument("account")
    rotate = secrets_cmd.add_parser("rotate", parents=[common], help="make a new key, print it and mail it")
    rotate.add_argument("account")

    report = commands.add_parser(
        "report", parents=[common], help="mail an account's fax report for the last full period, now"
    )
    report.add_argument("account")
    report.add_argument(
        "--period",
        choices=["daily", "weekly", "monthly"],
        help="the day, ISO week or month before this one (default: the account's report setting, else daily)",
    )
    report.add_argument(
        "--to",
        action="append",
        metavar="ADDRESS",
        help="mail it to this address instead of report_to / notify_extra (repeatable)",
    )
    commands.add_parser("purge", parents=[common], help="delete old documents and raw mails now, as [retention] says")
    return parser


def _fake_names() -> list[str]:
    from bridge.fakes import available

    return available()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = _parser().parse_args(argv)
    if args.command == "fake-provider":
        # Needs no configuration: it stands in for a service, not for the bridge.
        return _fake_provider(args.name, args.host, args.port, args.option)
    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        _err(f"configuration error: {exc}")
        return ExitCode.CONFIG
    setup_logging(settings.log_level)
    try:
        if args.command == "serve":
            return _serve(settings)
        return asyncio.run(_run(args, settings, sys.stdout))
    except ConfigError as exc:
        _err(f"configuration error: {exc}")
        return ExitCode.CONFIG
    except BridgeError as exc:
        _err(str(exc))
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return ExitCode.OK


def _fake_provider(name: str, host: str, port: int, raw_options: Sequence[str] = ()) -> int:
    from bridge.fakes import create_app
    from bridge.fakes.base import serve

    options: dict[str, object] = {}
    for item in raw_options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _err(f"--option takes KEY=VALUE, not {item!r}")
            return ExitCode.USAGE
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    try:
        fake = create_app(name, **options)
    except TypeError as exc:
        _err(f"the {name} fake does not take these options: {exc}")
        return ExitCode.USAGE
    except LookupError as exc:
        _err(str(exc))
        return ExitCode.USAGE
    print(f"fake {name} API on http://{host}:{port}/ (controls under /_fake/; Ctrl-C stops it)", flush=True)
    try:
        asyncio.run(serve(fake, host=host, port=port))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        _err(f"cannot listen on {host}:{port}: {exc.strerror}")
        return ExitCode.UNAVAILABLE
    return ExitCode.OK


def _err(message: str) -> None:
    sys.stderr.write(f"faxbridge: {message}\n")


def _serve(settings: Settings) -> int:
    from bridge.app import serve
    from bridge.systemd import Notifier

    # Read and strip NOTIFY_SOCKET before anything starts a child process.
    notifier = Notifier.from_environ()
    return asyncio.run(serve(settings, notifier=notifier))


async def _run(args: argparse.Namespace, settings: Settings, out: TextIO) -> int:
    if args.command == "check":
        return await _check(settings, out)
    if args.command == "inbox":
        return await _inbox(settings, out)
    if args.command in ("send", "secrets"):
        # `send` and `secrets` may come before the first `serve`; the state directory is ours to create.
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(settings.store_url, dedupe_window=_window(settings))
    await store.start()
    try:
        if args.command == "send":
            return await _send(args, settings, store, out)
        if args.command == "jobs" and args.jobs_command == "show":
            return await _show(store, args.job_id, out)
        if args.command == "secrets":
            return await _secrets(args, settings, store, out)
        if args.command == "report":
            return await _report(args, settings, store, out)
        if args.command == "purge":
            return await _purge(settings, store, out)
        return await _list(store, args, out)
    finally:
        await store.close()


async def _secrets(args: argparse.Namespace, settings: Settings, store: JobStore, out: TextIO) -> int:
    from bridge.mailer import build_mailer
    from bridge.secret_keys import KeyRotation

    account = next((a for a in settings.accounts if a.name == args.account), None)
    if account is None:
        names = ", ".join(a.name for a in settings.accounts)
        _err(f"no account named {args.account!r}; the configured accounts are {names}")
        return ExitCode.USAGE
    keys = KeyRotation(settings, store, build_mailer(settings.mail, settings.path))
    now = datetime.now(UTC)
    if args.secrets_command == "rotate":
        key = await keys.rotate(account, now)
        if key is None:
            _err("another faxbridge instance renewed the key at the same moment; run 'secrets show' and try again")
            return ExitCode.TEMPFAIL
        # The one place a key is ever shown: to the administrator who asked for it, on this terminal.
        print(key, file=out)
        return ExitCode.OK
    state = await keys.state(account, now)

    def when(moment: datetime | None, none: str) -> str:
        return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment is not None else none

    print(f"account {state.account}", file=out)
    print(f"  key required:    {'yes' if state.required else 'no'}", file=out)
    print(f"  renewal:         {state.renew}", file=out)
    print(f"  current key:     {when(state.current_since, 'none yet')}", file=out)
    previous = f"accepted until {when(state.previous_until, '')}" if state.previous_until else "not accepted"
    print(f"  previous key:    {previous}", file=out)
    print(f"  next renewal:    {when(state.next_rotation, 'never')}", file=out)
    return ExitCode.OK


async def _report(args: argparse.Namespace, settings: Settings, store: JobStore, out: TextIO) -> int:
    from bridge.errors import NotificationError
    from bridge.housekeeping import Housekeeping, ReportKind, report_recipients
    from bridge.mailer import build_mailer

    account = next((a for a in settings.accounts if a.name == args.account), None)
    if account is None:
        names = ", ".join(a.name for a in settings.accounts)
        _err(f"no account named {args.account!r}; the configured accounts are {names}")
        return ExitCode.USAGE
    for address in args.to or []:
        if "@" not in address or any(char.isspace() for char in address):
            _err(f"--to {address!r} is not a mail address")
            return ExitCode.USAGE
    recipients = [address.strip() for address in args.to] if args.to else None
    if recipients is None and not report_recipients(account):
        _err(
            f"account {account.name} has neither report_to nor notify_extra, so nobody would get the report; "
            "set one of them or pass --to ADDRESS"
        )
        return ExitCode.CONFIG
    kind: ReportKind = args.period or ("daily" if account.report == "never" else account.report)
    housekeeping = Housekeeping(settings, store, build_mailer(settings.mail, settings.path))
    try:
        sent = await housekeeping.send_report(account, kind, datetime.now(UTC), force=True, recipients=recipients)
    except NotificationError as exc:
        _err(f"the report could not be mailed: {exc}")
        return ExitCode.TEMPFAIL if exc.is_temporary else ExitCode.UNAVAILABLE
    if sent is None:  # pragma: no cover - recipients were checked above
        return ExitCode.SOFTWARE
    faxes = f"{sent.faxes} fax" if sent.faxes == 1 else f"{sent.faxes} faxes"
    print(
        f"{kind} report {sent.label} of account {account.name} ({faxes}) mailed to {', '.join(sent.recipients)}",
        file=out,
    )
    return ExitCode.OK


async def _purge(settings: Settings, store: JobStore, out: TextIO) -> int:
    from bridge.housekeeping import Housekeeping
    from bridge.mailer import build_mailer

    housekeeping = Housekeeping(settings, store, build_mailer(settings.mail, settings.path))
    now = datetime.now(UTC)
    documents_before, messages_before = housekeeping.cutoffs(now)
    if documents_before is None and messages_before is None:
        print("retention keeps everything: retention.documents_days and retention.messages_days are unset", file=out)
        return ExitCode.OK
    result = await housekeeping.purge(now)
    if documents_before is None:
        print("documents and previews: kept (retention.documents_days is unset)", file=out)
    else:
        print(
            f"documents: {result.documents} deleted, previews: {result.previews} deleted "
            f"(faxes finished before {documents_before:%Y-%m-%d %H:%M} UTC)",
            file=out,
        )
    if messages_before is None:
        print("raw mails: kept (retention.messages_days is unset)", file=out)
    else:
        print(
            f"raw mails: {result.messages} deleted (all of their faxes finished before "
            f"{messages_before:%Y-%m-%d %H:%M} UTC)",
            file=out,
        )
    print("job and message metadata are kept: faxbridge jobs still lists every fax", file=out)
    return ExitCode.OK


def _window(settings: Settings) -> timedelta:
    return timedelta(days=settings.store.dedupe_days)


async def _check(settings: Settings, out: TextIO) -> int:
    from bridge.app import build_providers

    providers = build_providers(settings)
    try:
        print(f"configuration {settings.config_file}: valid", file=out)
        print(f"state directory: {settings.state_dir}", file=out)
        print(f"store: {settings.store_url}", file=out)
        print(f"SMTP: {settings.smtp.listen_host}:{settings.smtp.listen_port}", file=out)
        print(f"fax domains: {', '.join(settings.fax_domains)}", file=out)
        for name, provider in providers.items():
            print(f"provider {name}: {provider.type_name}", file=out)
        for account in settings.accounts:
            print(
                f"account {account.name}: {account.provider}, senders {', '.join(account.allowed_senders)}",
                file=out,
            )
        from bridge.notify import load_templates

        load_templates(settings)
        print("templates: valid (en, de, nl, and each account's own)", file=out)
        for line in _document_tools():
            print(line, file=out)
    finally:
        for provider in providers.values():
            await provider.aclose()
    return ExitCode.OK


def _document_tools() -> list[str]:
    """What the document converters found on this system: LibreOffice and a font for each script."""
    from fpdf.unicode_script import UnicodeScript

    from bridge.converters.fonts import base_font, find_font
    from bridge.converters.office import find_soffice

    soffice = find_soffice()
    lines = [f"LibreOffice: {soffice}" if soffice else "LibreOffice: not found (office attachments are refused)"]
    base = base_font()
    lines.append(f"font for Latin, Cyrillic, Greek: {base.path if base else 'none (only Western text prints)'}")
    samples = (
        ("Arabic", UnicodeScript.ARABIC, "\u0645", None),
        ("Hebrew", UnicodeScript.HEBREW, "\u05d0", None),
        ("Chinese", UnicodeScript.HAN, "\u4e2d", "zh-cn"),
        ("Japanese", UnicodeScript.HIRAGANA, "\u3042", "ja"),
        ("Korean", UnicodeScript.HANGUL, "\ud55c", "ko"),
    )
    for label, script, sample, lang in samples:
        face = find_font(script, sample, lang=lang)
        lines.append(f"font for {label}: {face.path if face else 'none (prints as ?)'}")
    return lines


async def _inbox(settings: Settings, out: TextIO) -> int:
    from bridge.app import InboundWatch, build_providers

    providers = build_providers(settings)
    try:
        refs = await InboundWatch(providers).poll()
    finally:
        for provider in providers.values():
            await provider.aclose()
    for ref in refs:
        print(
            f"{ref.received_at:%Y-%m-%d %H:%M:%S}  {ref.provider:<10} {ref.provider_fax_id:<30} "
            f"from {ref.caller or '-'} to {ref.called or '-'}",
            file=out,
        )
    if not refs:
        print("no incoming faxes", file=out)
    return ExitCode.OK


async def _send(args: argparse.Namespace, settings: Settings, store: JobStore, out: TextIO) -> int:
    names = [account.name for account in settings.accounts]
    if args.account and args.account not in names:
        _err(f"no account {args.account!r}; configured: {', '.join(names)}")
        return ExitCode.USAGE
    account = settings.account(args.account) if args.account else settings.accounts[0]
    sender = args.sender or next((s for s in account.allowed_senders if not s.startswith("*@")), None)
    if sender is None:
        _err(f"account {account.name} allows only whole domains; name the sender with --from")
        return ExitCode.USAGE
    router = Router(settings)
    owner = router.account_for(sender)
    if owner is None or owner.name != account.name:
        _err(f"{sender} is not an allowed sender of account {account.name}")
        return ExitCode.DATAERR
    recipient = router.recipient(f"{args.to}@{settings.fax_domains[0]}", account)
    message = EmailMessage()
    message["From"] = sender
    message["To"] = f"{recipient.number}@{settings.fax_domains[0]}"
    message["Subject"] = args.subject
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain=settings.smtp.hostname)
    message.set_content(args.text or "")
    for path in args.files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            _err(f"cannot read {path}: {exc.strerror}")
            return ExitCode.NOINPUT
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        maintype, _, subtype = ctype.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
    # The secret key proves a mail's sender was told it; whoever runs this command has the configuration.
    request = build_request(
        router,
        account,
        message.as_bytes(),
        mail_from=sender,
        recipients=[recipient],
        client_address=None,
        require_secret_key=False,
    )
    [result] = await store.accept_messages([request])
    for job_id in result.job_ids:
        print(f"queued job {job_id}: fax to {format_number(recipient.number)}", file=out)
    print("the running bridge sends it; watch it with: faxbridge jobs", file=out)
    return ExitCode.OK


async def _list(store: JobStore, args: argparse.Namespace, out: TextIO) -> int:
    states = [JobState(s) for s in args.state] if args.state else None
    jobs = await store.list_jobs(states=states, limit=args.limit)
    if args.json:
        for job in jobs:
            print(json.dumps(_job_dict(job)), file=out)
        return ExitCode.OK
    print(
        f"{'JOB':<18}  {'STATE':<16} {'NOTICE':<8} {'TO':<18} {'PAGES':>5}  {'CREATED (UTC)':<19}  REASON",
        file=out,
    )
    for job in jobs:
        print(
            f"{job.job_id:<18}  {job.state.value:<16} {job.notice.value:<8} {job.number:<18} "
            f"{job.pages if job.pages is not None else '-':>5}  {job.created_at:%Y-%m-%d %H:%M:%S}  {job.reason or ''}",
            file=out,
        )
    return ExitCode.OK


async def _show(store: JobStore, job_id: str, out: TextIO) -> int:
    job = await store.get_job(job_id)
    for key, value in _job_dict(job).items():
        print(f"{key:>20}: {value}", file=out)
    return ExitCode.OK


def _job_dict(job: FaxJob) -> dict[str, object]:
    data = asdict(job)
    return {key: (value.isoformat() if hasattr(value, "isoformat") else value) for key, value in data.items()}
