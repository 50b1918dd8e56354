"""The composition root: settings → store → providers → mailer → worker → SMTP, in one event loop.

Start-up order is the order of dependence; shutdown runs in reverse, so that nothing is accepted that cannot be
stored and no job is cut off without its lease being handed back:

1. stop accepting SMTP (new commands get ``421``), let messages past their final dot be committed;
2. let in-flight jobs finish for ``worker.shutdown_grace_seconds``, then release their leases;
3. stop the timers, close the providers and the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bridge.errors import BridgeError, StartupError
from bridge.housekeeping import Housekeeping
from bridge.inbound import InboundDelivery
from bridge.intake import Intake
from bridge.mailer import Mailer, build_mailer
from bridge.models import InboundRef
from bridge.notify import load_templates
from bridge.providers import build_provider
from bridge.providers.base import Capability, FaxProvider
from bridge.routing import Router
from bridge.secret_keys import KeyRotation
from bridge.settings import Settings
from bridge.smtp import FaxHandler, SMTPServer
from bridge.stores import open_store
from bridge.stores.base import JobStore
from bridge.systemd import Notifier
from bridge.web import create_web_app, serve_web
from bridge.worker import Worker

log = logging.getLogger(__name__)

KEY_CHECK_SECONDS = 60.0
"""How often the daemon looks for secret keys that are due for renewal."""

REPORT_MINUTE = 5
"""The minute of every hour at which the daemon sends the account reports that are due (a daily report goes
out at 00:05 UTC). Each period is claimed in the store, so an hour where nothing is due costs one small
transaction per reporting account."""

PURGE_MINUTE = 30
"""The minute of ``retention.hour`` at which the daily purge runs."""

MISFIRE_GRACE_SECONDS = 3600
"""A report or purge whose time passed while the event loop was busy (or the host asleep) still runs within
this long; later, it waits for its next time."""


def build_providers(settings: Settings) -> dict[str, FaxProvider]:
    """Build every configured provider; raises ``ConfigError`` for a bad section."""
    return {name: build_provider(name, section, settings.state_dir) for name, section in settings.providers.items()}


@dataclass
class InboundWatch:
    """Lists faxes that providers hold for us. Mailing them belongs to the inbound delivery."""

    providers: dict[str, FaxProvider]
    seen: set[tuple[str, str]] = field(default_factory=set)

    async def poll(self) -> list[InboundRef]:
        """Log and return the incoming faxes not seen before."""
        new: list[InboundRef] = []
        for provider in self.providers.values():
            if Capability.INBOUND_POLL not in provider.capabilities:
                continue
            try:
                refs = await provider.poll_incoming()
            except Exception as exc:
                log.warning("cannot list incoming faxes at %s: %s", provider.name, exc)
                continue
            for ref in refs:
                key = (ref.provider, ref.provider_fax_id)
                if key not in self.seen:
                    self.seen.add(key)
                    new.append(ref)
                    log.info(
                        "incoming fax at %s: %s from %s to %s",
                        ref.provider,
                        ref.provider_fax_id,
                        ref.caller or "unknown caller",
                        ref.called or "unknown number",
                    )
        return new


class Bridge:
    """One running faxbridge instance."""

    def __init__(
        self, settings: Settings, *, notifier: Notifier | None = None, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.settings = settings
        self.notifier = notifier or Notifier.from_environ({})
        # The wall clock of the SMTP checks that depend on time (secret keys in their grace period, rate
        # limits); replaceable so that a test can move time forward.
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self._stack = AsyncExitStack()
        self.store: JobStore | None = None
        self.worker: Worker | None = None
        self.keys: KeyRotation | None = None
        self.housekeeping: Housekeeping | None = None
        self.inbound: InboundDelivery | None = None
        self.providers: dict[str, FaxProvider] = {}
        self.mailer: Mailer | None = None
        self.http_address: tuple[str, int] | None = None
        self.smtp: SMTPServer | None = None
        self.address: tuple[str, int] | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._watchdog_task: asyncio.Task[None] | None = None

    async def start(self) -> tuple[str, int]:
        """Start everything; return the SMTP address actually listening."""
        settings = self.settings
        # Every template, shipped and per account, is checked before anything starts: a template error stops
        # the start here (a ConfigError, exit 78), not at the first notice hours later.
        load_templates(settings)
        try:
            settings.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(
                f"cannot create the state directory {settings.state_dir}: {exc.strerror}; "
                "create it and let the faxbridge user write to it"
            ) from exc
        store = open_store(settings.store_url, dedupe_window=_days(settings.store.dedupe_days))
        await store.start()
        self._stack.push_async_callback(store.close)
        self.store = store

        providers = build_providers(settings)
        for provider in providers.values():
            self._stack.push_async_callback(provider.aclose)
        mailer: Mailer = build_mailer(settings.mail, settings.path)
        self.providers, self.mailer = providers, mailer

        worker = Worker(settings, store, providers, mailer)
        self.worker = worker
        intake = Intake(store, batch_max=settings.smtp.batch_max, on_accepted=worker.wake)
        intake.start()
        self._stack.push_async_callback(intake.close)

        if settings.worker.enabled:
            self._worker_task = asyncio.create_task(worker.run(), name="worker")
            self._stack.push_async_callback(self._stop_worker)
        else:
            log.info("the worker is disabled (worker.enabled = false): jobs are stored, not sent")

        scheduler = AsyncIOScheduler(timezone="UTC")
        inbound = InboundDelivery(settings, store, providers, mailer, holder=worker.worker_id, clock=self.clock)
        self.inbound = inbound
        if settings.inbound.enabled:
            # One instance of a cluster polls at a time (a lease in the store); each fax is mailed once.
            scheduler.add_job(
                inbound.poll,
                "interval",
                seconds=settings.inbound.poll_seconds,
                max_instances=1,
                coalesce=True,
                id="inbound-delivery",
            )
        else:
            log.info("incoming faxes are not polled (inbound.enabled = false)")
        keys = KeyRotation(settings, store, mailer)
        self.keys = keys
        # Keys are renewed on the minute after they fall due; the first key of an account that requires one
        # is made (and mailed) right here, before the first mail can be refused for lacking it.
        scheduler.add_job(
            self._renew_keys,
            "interval",
            seconds=KEY_CHECK_SECONDS,
            max_instances=1,
            coalesce=True,
            id="secret-key-renewal",
        )
        housekeeping = Housekeeping(settings, store, mailer, clock=self.clock)
        self.housekeeping = housekeeping
        # Reports: every hour, for the accounts whose last full period was not reported yet.
        scheduler.add_job(
            self._send_reports,
            "cron",
            minute=REPORT_MINUTE,
            max_instances=1,
            coalesce=True,
            misfire_grace_time=MISFIRE_GRACE_SECONDS,
            id="account-reports",
        )
        retention = settings.retention
        if retention.documents_days is not None or retention.messages_days is not None:
            # Once a day at night; every instance of a cluster runs it, which is harmless: it is idempotent and
            # works in short transactions.
            scheduler.add_job(
                self._purge,
                "cron",
                hour=retention.hour,
                minute=PURGE_MINUTE,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=MISFIRE_GRACE_SECONDS,
                id="retention-purge",
            )
        else:
            log.info("retention keeps every document and raw mail (retention.*_days are unset)")
        scheduler.start()
        self._stack.callback(scheduler.shutdown, wait=False)
        if settings.inbound.enabled:
            await inbound.poll()
        await keys.rotate_due(self.clock())

        if settings.http.enabled:
            await self._start_http(store, providers, worker, inbound)

        handler = FaxHandler(settings, Router(settings), intake, store=store, keys=keys, clock=lambda: self.clock())
        self.smtp = SMTPServer(settings, handler)
        try:
            self.address = await self.smtp.start()
        except OSError as exc:
            raise StartupError(
                f"cannot listen for SMTP on {settings.smtp.listen_host}:{settings.smtp.listen_port}: {exc.strerror}; "
                "is another faxbridge or mail server using it? Change smtp.listen_port"
            ) from exc
        self._stack.push_async_callback(self.smtp.stop)

        self._watchdog_task = asyncio.create_task(self.notifier.run_watchdog(), name="watchdog")
        self.notifier.ready(f"listening on {self.address[0]}:{self.address[1]}")
        log.info("faxbridge listening for mail on %s:%d", *self.address)
        return self.address

    async def _start_http(
        self,
        store: JobStore,
        providers: dict[str, FaxProvider],
        worker: Worker,
        inbound: InboundDelivery,
    ) -> None:
        http = self.settings.http
        secret = http.webhook_secret
        if http.webhook_secret_file is not None:
            path = self.settings.path(http.webhook_secret_file)
            try:
                secret = path.read_text().strip() or None
            except OSError as exc:
                raise StartupError(
                    f"cannot read http.webhook_secret_file {path}: {exc.strerror}; create it or remove the setting"
                ) from exc
        app = create_web_app(
            store=store,
            providers=providers,
            worker=worker if self.settings.worker.enabled else None,
            inbound=inbound if self.settings.inbound.enabled else None,
            secret=secret,
            clock=self.clock,
        )
        try:
            self.http_address, stop = await serve_web(app, http.listen_host, http.listen_port)
        except OSError as exc:
            raise StartupError(
                f"cannot listen for HTTP on {http.listen_host}:{http.listen_port}: {exc}; change http.listen_port"
            ) from exc
        self._stack.push_async_callback(stop)
        log.info("HTTP endpoint (webhooks, /healthz, /metrics) on %s:%d", *self.http_address)

    async def _renew_keys(self) -> None:
        if self.keys is not None:
            await self.keys.rotate_due(self.clock())

    async def _send_reports(self) -> None:
        if self.housekeeping is not None:
            await self.housekeeping.send_reports(self.clock())

    async def _purge(self) -> None:
        if self.housekeeping is not None:
            try:
                await self.housekeeping.purge(self.clock())
            except BridgeError as exc:
                log.error("retention: the purge failed and runs again tomorrow (or run 'faxbridge purge'): %s", exc)

    async def _stop_worker(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
        if self._worker_task is not None:
            self._worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker_task
        if self.worker is not None and self.worker.sandbox is not None:
            await asyncio.to_thread(self.worker.sandbox.close)

    async def stop(self) -> None:
        """Shut down in reverse order of start-up."""
        self.notifier.stopping()
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog_task
        await self._stack.aclose()
        log.info("faxbridge stopped")


def _days(value: float) -> timedelta:
    return timedelta(days=value)


async def serve(settings: Settings, *, notifier: Notifier | None = None) -> int:
    """Run until SIGTERM or SIGINT; return the exit code."""
    bridge = Bridge(settings, notifier=notifier)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await bridge.start()
        await stop.wait()
        log.info("shutting down")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await bridge.stop()
    return 0
