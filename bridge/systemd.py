"""Talk to systemd's service manager: readiness, stopping, status and watchdog pings (``sd_notify``).

The protocol is small enough that a dependency is not worth it: each notification is one datagram of
newline-separated ``KEY=value`` fields sent over an ``AF_UNIX`` ``SOCK_DGRAM`` socket to the address in
``$NOTIFY_SOCKET`` (a filesystem path, or an abstract socket written with a leading ``@``). See
``sd_notify(3)`` and ``systemd.service(5)``.

Use it like this in ``serve``::

    notifier = Notifier.from_environ()         # first thing: strips NOTIFY_SOCKET from os.environ
    ...                                         # open the store, start SMTP and HTTP
    notifier.ready("accepting mail on 127.0.0.1:2525")
    watchdog = asyncio.create_task(notifier.run_watchdog())
    ...                                         # on SIGTERM:
    notifier.stopping()

Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op returning ``False``, so the same code runs in a
terminal, in tests and under the service manager. Sending never raises: a service must not die because its
supervisor's socket went away.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import MutableMapping

__all__ = ["Notifier"]

log = logging.getLogger(__name__)

_ENVIRONMENT_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")

# A full receive queue on the manager's side would block a plain blocking send forever and with it the event
# loop. A short bound keeps the loop alive; a READY=1 lost after a second of back-pressure is then reported
# in the log instead of hanging the service.
_SEND_TIMEOUT_SECONDS = 1.0


class Notifier:
    """Sends ``sd_notify`` messages to systemd, or does nothing when not started by it.

    Build it with :meth:`from_environ` as early as possible, so that the notification variables are removed
    from the environment before any child process (a document converter) is started: a child that inherits
    ``NOTIFY_SOCKET`` could tell systemd the service is ready, or keep a dead one's watchdog happy.
    """

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
    ) -> None:
        """Create a notifier for ``address`` (``$NOTIFY_SOCKET``'s value); ``None`` makes it a no-op.

        ``watchdog_usec`` and ``watchdog_pid`` are the values of ``$WATCHDOG_USEC`` and ``$WATCHDOG_PID``.
        """
        self._address = _socket_address(address)
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        # A forked child inherits this object; it must not speak for the service (with NotifyAccess=main
        # systemd would reject and log every one of its messages anyway).
        self._owner_pid = os.getpid()
        self._failure_logged = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` and remove them from ``environ``.

        ``environ`` defaults to ``os.environ``; removing keys from it also unsets them for child processes.
        """
        if environ is None:
            environ = os.environ
        values = {key: environ.pop(key, None) for key in _ENVIRONMENT_KEYS}
        return cls(
            values["NOTIFY_SOCKET"] or None,
            watchdog_usec=_positive_int(values["WATCHDOG_USEC"], "WATCHDOG_USEC"),
            watchdog_pid=_positive_int(values["WATCHDOG_PID"], "WATCHDOG_PID"),
        )

    @property
    def enabled(self) -> bool:
        """Whether there is a notification socket to send to."""
        return self._address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings: half of ``WatchdogSec=``, as ``sd_watchdog_enabled(3)`` advises.

        ``None`` when the watchdog is off: no ``$WATCHDOG_USEC``, no notification socket to ping, or a
        ``$WATCHDOG_PID`` naming another process (the variables were meant for our parent, not for us).
        """
        if self._watchdog_usec is None or self._address is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != self._owner_pid:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    def notify(self, *fields: str) -> bool:
        """Send ``fields`` (such as ``"READY=1"``) to systemd as one datagram; return whether it was sent.

        Without a notification socket this is a no-op that returns ``False``. Errors are never raised: the
        first failure is logged as a warning, repeats at debug level until a send succeeds again.
        """
        if self._address is None or not fields or os.getpid() != self._owner_pid:
            return False
        payload = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(_SEND_TIMEOUT_SECONDS)
                sock.sendto(payload, self._address)
        except OSError as exc:
            level = logging.DEBUG if self._failure_logged else logging.WARNING
            self._failure_logged = True
            log.log(level, "cannot notify systemd at %s: %s", self._display_address, exc)
            return False
        self._failure_logged = False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd start-up is complete (``READY=1``), optionally with a status line."""
        if status is None:
            return self.notify("READY=1")
        return self.notify("READY=1", _status_field(status))

    def stopping(self) -> bool:
        """Tell systemd the service is shutting down (``STOPPING=1``)."""
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """Set the one-line status shown by ``systemctl status`` (``STATUS=…``)."""
        return self.notify(_status_field(text))

    def watchdog(self) -> bool:
        """Reset systemd's watchdog timer (``WATCHDOG=1``)."""
        return self.notify("WATCHDOG=1")

    async def run_watchdog(self) -> None:
        """Ping the watchdog every :attr:`watchdog_interval` seconds until cancelled.

        Returns at once when the watchdog is off. Run it as a task in the application's event loop: the pings
        then prove that the loop itself still turns, which is what the watchdog is there to detect.
        """
        interval = self.watchdog_interval
        if interval is None:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval)

    @property
    def _display_address(self) -> str:
        address = self._address or ""
        return "@" + address[1:] if address.startswith("\0") else address

    def __repr__(self) -> str:
        return f"Notifier({self._display_address or None!r}, watchdog_interval={self.watchdog_interval!r})"


def _socket_address(value: str | None) -> str | None:
    """Turn ``$NOTIFY_SOCKET`` into an address for ``sendto``, or ``None`` when it cannot be used."""
    if not value:
        return None
    if value.startswith("@"):
        # Linux abstract namespace: systemd writes the leading NUL byte as "@".
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # Newer systemd versions may hand out other schemes (vsock:…); sd_notify(3) ignores what it cannot use
    # rather than failing the service, and so do we.
    log.warning("ignoring NOTIFY_SOCKET=%r: only absolute paths and @abstract sockets are supported", value)
    return None


def _positive_int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number <= 0:
        log.warning("ignoring %s=%r: not a positive integer", name, value)
        return None
    return number


def _status_field(text: str) -> str:
    # A newline would end the STATUS field and start a new one, so text from a message or an exception could
    # otherwise smuggle in "READY=1" or "STOPPING=1".
    return "STATUS=" + " ".join(text.splitlines())
