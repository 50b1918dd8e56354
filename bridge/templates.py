"""Templates for every mail the bridge writes, in English, German and Dutch.

Each template is one TOML file, ``<language>/<name>.toml``, with a ``subject``, a plain-text ``text`` and, where
wanted, an ``html`` body (the shipped ``incoming`` has one). The shipped files live in ``config/templates/`` of
the source tree; ``default_templates_dir`` says where an installation finds them. An administrator overrides
single templates for one account with a directory of the same layout (``de/delivered.toml``): each file there
replaces that template, in that language, for that account only.

Placeholders are ``{name}``, and nothing else: no attribute or index access, no format specs, no conversions —
the values are formatted here, per language and time zone, so a template has no use for them, and a template
file cannot run code or reach into an object. ``{{`` and ``}}`` are literal braces. Everything is checked when
the templates are loaded: every template in every language exists and parses, and uses only the placeholders
allowed for it (``PLACEHOLDERS``); a mistake raises ``TemplateError`` naming the file, the template and the
placeholder.

The values (``Templates.render``):

* ``{to}``, ``{subject}``, ``{reason}``, ``{code}``, ``{job_id}``, ``{service}``, ``{caller}``, ``{called}``,
  ``{fax_id}``, ``{key}``, ``{account}``…: text as the caller gives it, on one line. ``{caller}`` is "unknown
  number" in the template's language when empty; ``{status}`` defaults to the template's outcome in words.
* ``{pages}`` and the counts of ``report``: numbers, grouped per language ("1,234", "1.234"); ``{pages}`` is
  empty when the count is unknown (``None`` or 0). Computed from it: ``{pages_text}`` ("3 pages", "3 Seiten",
  "3 pagina's") and ``{pages_suffix}`` (" — 3 pages", or empty).
* ``{subject_suffix}``: " (Re: <the sender's subject>)", or empty when the sender wrote none; ``{reason_suffix}``:
  ": <reason>", or empty. Both keep a subject like "Fax to … failed{reason_suffix}{subject_suffix}" tidy.
* ``{date}`` and ``{time}``: the moment of the event (``when``) in the account's time zone and language:
  "1 December 2026" / "1. Dezember 2026" / "1 december 2026", and "00:30". ``{received}`` and
  ``{next_rotation}`` take a ``datetime`` and read "1 December 2026 at 00:30" (German "… um 00:30 Uhr").
* ``{grace}``: hours (a number or a ``timedelta``) as "24 hours" / "24 Stunden" / "24 uur"; empty for zero.
* ``{period}``: text, or a ``(first, last)`` pair of dates, both included: "November 2026", "1.–7. Dezember 2026".
* ``{documents}``, ``{advice}``, ``{summary}``: blocks of lines (a string or a sequence of strings). When the
  placeholder is preceded on its line by nothing but spaces and an optional bullet (``- ``), every line of the
  block gets that same prefix: ``  {documents}`` indents each line, ``- {advice}`` makes each line a bullet.

How a plain-text body is laid out:

* A line whose placeholders are all empty is left out ("Code: {code}" when there is no code); so is a heading
  (a paragraph's line ending in ``:``) when nothing is left below it in its paragraph.
* Blank lines are collapsed to one; a line longer than 72 characters is wrapped, keeping its indentation (and
  a bullet's hanging indent); a line that is just ``--`` becomes the signature separator ``-- ``.

In an HTML body every value is HTML-escaped, the lines of a block are joined with ``<br>``, and a line whose
placeholders are all empty is left out; nothing is wrapped. In a subject every value loses control characters
(CR and LF above all: a value can never start a header of its own) and line breaks, and the subject is capped
at 200 characters by shortening the sender's subject inside its suffix first.
"""

from __future__ import annotations

import html as html_lib
import re
import sys
import textwrap
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge.errors import ConfigError

__all__ = [
    "LANGUAGES",
    "PLACEHOLDERS",
    "TEMPLATE_NAMES",
    "Rendered",
    "TemplateError",
    "Templates",
    "default_templates_dir",
    "format_date",
    "format_datetime",
    "format_hours",
    "format_period",
    "format_time",
    "pages_text",
]

LANGUAGES: Final = ("en", "de", "nl")

TEMPLATE_NAMES: Final[tuple[str, ...]] = (
    "accepted",
    "delivered",
    "failed",
    "rejected",
    "uncertain",
    "handed_over",
    "incoming",
    "secret_rotated",
    "report",
)

_OUTGOING: Final = ("accepted", "delivered", "failed", "rejected", "uncertain", "handed_over")
_COMMON: Final = frozenset({"account", "date", "time"})
_OUTGOING_PLACEHOLDERS: Final = _COMMON | {
    "to",
    "pages",
    "pages_text",
    "pages_suffix",
    "status",
    "reason",
    "reason_suffix",
    "code",
    "job_id",
    "subject",
    "subject_suffix",
    "received",
    "attempts",
    "documents",
    "advice",
    "service",
    "preview",
}

PLACEHOLDERS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        **dict.fromkeys(_OUTGOING, _OUTGOING_PLACEHOLDERS),
        "incoming": _COMMON
        | {"caller", "called", "pages", "pages_text", "pages_suffix", "fax_id", "service", "job_id"},
        "secret_rotated": _COMMON | {"key", "grace", "next_rotation"},
        "report": _COMMON
        | {"period", "summary", "faxes_sent", "faxes_received", "pages_sent", "pages_received", "failures"},
    }
)
"""The placeholders each template may use. Every one may also be left without a value (it renders empty),
except those in ``_REQUIRED_VALUES``."""

# Computed by render from other values; a caller passing one of these is a bug.
_DERIVED: Final = frozenset({"pages_text", "pages_suffix", "subject_suffix", "reason_suffix", "date", "time"})
# Blocks of lines: never in a subject.
_MULTILINE: Final = frozenset({"documents", "advice", "summary"})
# Never broken across lines when a long line is wrapped: a number, a date, "3 pages" read as one.
_KEEP_TOGETHER: Final = frozenset(
    {
        "to",
        "caller",
        "called",
        "pages_text",
        "date",
        "time",
        "received",
        "next_rotation",
        "period",
        "grace",
        "key",
        "job_id",
        "fax_id",
        "code",
    }
)
_COUNTS: Final = frozenset({"pages", "faxes_sent", "faxes_received", "pages_sent", "pages_received", "failures"})
# What a template must use, and where a placeholder must never go.
_REQUIRED_IN_TEXT: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {"secret_rotated": frozenset({"key"}), "report": frozenset({"summary"})}
)
# The key is a credential: a subject is logged by every mail server on the way.
_FORBIDDEN_IN_SUBJECT: Final[Mapping[str, frozenset[str]]] = MappingProxyType({"secret_rotated": frozenset({"key"})})
_REQUIRED_VALUES: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        **dict.fromkeys(_OUTGOING, frozenset({"to"})),
        "handed_over": frozenset({"to", "service"}),
        "secret_rotated": frozenset({"key"}),
        "report": frozenset({"summary"}),
    }
)
_FILE_KEYS: Final = frozenset({"subject", "text", "html"})

SUBJECT_LIMIT: Final = 200
_ECHOED_SUBJECT: Final = 120
_ECHOED_SUBJECT_MIN: Final = 20
_SUBJECT_VALUE_LIMIT: Final = 100
_VALUE_LIMIT: Final = 1000
_WIDTH: Final = 72


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_MONTHS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "en": _words("January February March April May June July August September October November December"),
        "de": _words("Januar Februar März April Mai Juni Juli August September Oktober November Dezember"),
        "nl": _words("januari februari maart april mei juni juli augustus september oktober november december"),
    }
)
# Day before the month: "1 December 2026", "1. Dezember 2026", "1 december 2026".
_DAY: Final[Mapping[str, str]] = MappingProxyType({"en": "{day}", "de": "{day}.", "nl": "{day}"})
_AT: Final[Mapping[str, str]] = MappingProxyType(
    {"en": "{date} at {time}", "de": "{date} um {time} Uhr", "nl": "{date} om {time}"}
)
_THOUSANDS: Final[Mapping[str, str]] = MappingProxyType({"en": ",", "de": ".", "nl": "."})
_DECIMAL: Final[Mapping[str, str]] = MappingProxyType({"en": ".", "de": ",", "nl": ","})
_PAGES: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {"en": ("page", "pages"), "de": ("Seite", "Seiten"), "nl": ("pagina", "pagina's")}
)
_HOURS: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {"en": ("hour", "hours"), "de": ("Stunde", "Stunden"), "nl": ("uur", "uur")}
)
_UNKNOWN_CALLER: Final[Mapping[str, str]] = MappingProxyType(
    {"en": "unknown number", "de": "unbekannt", "nl": "onbekend nummer"}
)
_STATUS: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        "en": {
            "accepted": "accepted",
            "delivered": "delivered",
            "failed": "failed",
            "rejected": "not sent",
            "uncertain": "delivery uncertain",
            "handed_over": "handed over",
        },
        "de": {
            "accepted": "angenommen",
            "delivered": "zugestellt",
            "failed": "fehlgeschlagen",
            "rejected": "nicht gesendet",
            "uncertain": "Zustellung ungewiss",
            "handed_over": "übergeben",
        },
        "nl": {
            "accepted": "geaccepteerd",
            "delivered": "afgeleverd",
            "failed": "mislukt",
            "rejected": "niet verzonden",
            "uncertain": "aflevering onzeker",
            "handed_over": "overgedragen",
        },
    }
)

_NAME = re.compile(r"[a-z][a-z0-9_]*")
_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|\{|\}")
# C0 and C1 controls (CR, LF, NEL…), Unicode line and paragraph separators, and the bidi embeddings, overrides
# and isolates that can make a subject read differently from what it says.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_UNSAFE_KEEP_TAB = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_LINE_BREAK = re.compile("\r\n|[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
# Control characters a template body may not hold (TOML escapes could put them there); tab and LF are fine.
_BODY_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Stands in for a space that must not become a line break while a line is wrapped.
_GLUE = "\x00"
_BLOCK_PREFIX = re.compile(r"[ \t]*(?:[-*•–] +)?")


class TemplateError(ConfigError):
    """A template file is missing, unreadable or invalid; the message names the file, template and placeholder."""

    def __init__(
        self,
        problem: str,
        *,
        path: Path | None = None,
        template: str | None = None,
        language: str | None = None,
        placeholder: str | None = None,
    ) -> None:
        where = []
        if path is not None:
            where.append(f"{path}:")
        if template is not None:
            where.append(f"template {template!r}" + (f" ({language}):" if language else ":"))
        super().__init__(" ".join([*where, problem]))
        self.problem = problem
        self.path = path
        self.template = template
        self.language = language
        self.placeholder = placeholder


@dataclass(frozen=True)
class Rendered:
    """A rendered mail: a one-line subject, a plain-text body ending in a newline, and maybe an HTML body."""

    subject: str
    text: str
    html: str | None


@dataclass(frozen=True, slots=True)
class _Field:
    name: str


_Segment = str | _Field
_Line = tuple[_Segment, ...]


@dataclass(frozen=True, slots=True)
class _Template:
    name: str
    language: str
    path: Path
    subject: _Line
    text: tuple[_Line, ...]
    html: tuple[_Line, ...] | None


# Dates, times and numbers.


def _check_language(language: str) -> str:
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; known: {', '.join(LANGUAGES)}")
    return language


def _zone(tz: str) -> ZoneInfo:
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(f"unknown time zone {tz!r} (an IANA name such as 'Europe/Berlin' is needed)") from exc


def _local(moment: datetime, tz: str) -> datetime:
    # The store keeps UTC; a naive value is taken as UTC, never as this host's local time.
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return aware.astimezone(_zone(tz))


def _day_month(day: date, language: str) -> str:
    return f"{_DAY[language].format(day=day.day)} {_MONTHS[language][day.month - 1]}"


def _date_text(day: date, language: str) -> str:
    return f"{_day_month(day, language)} {day.year}"


def format_date(moment: datetime | date, language: str, tz: str = "UTC") -> str:
    """The day of ``moment`` in time zone ``tz``: "1 December 2026", "1. Dezember 2026", "1 december 2026".

    A naive ``datetime`` is taken as UTC; a plain ``date`` is used as it is.
    """
    _check_language(language)
    day = _local(moment, tz).date() if isinstance(moment, datetime) else moment
    return _date_text(day, language)


def format_time(moment: datetime, language: str, tz: str = "UTC") -> str:
    """The time of day of ``moment`` in time zone ``tz``, on the 24-hour clock in every language: "00:30"."""
    _check_language(language)
    return f"{_local(moment, tz):%H:%M}"


def format_datetime(moment: datetime, language: str, tz: str = "UTC") -> str:
    """Day and time: "1 December 2026 at 00:30", "1. Dezember 2026 um 00:30 Uhr", "1 december 2026 om 00:30"."""
    return _AT[language].format(date=format_date(moment, language, tz), time=format_time(moment, language, tz))


def format_period(first: date, last: date, language: str) -> str:
    """The days from ``first`` to ``last``, both included, as briefly as is clear.

    A whole month reads "December 2026"; a whole year "2026"; otherwise "1–7 December 2026",
    "1.–7. Dezember 2026", "28 November – 4 December 2026" or the two full dates.
    """
    _check_language(language)
    if isinstance(first, datetime) or isinstance(last, datetime):
        raise TypeError("format_period takes dates, not datetimes: a datetime's day depends on the time zone")
    if last < first:
        raise ValueError(f"a period cannot end ({last}) before it starts ({first})")
    months = _MONTHS[language]
    next_day = last + timedelta(days=1)
    if first.day == 1 and next_day.day == 1 and (first.year, first.month) == (last.year, last.month):
        return f"{months[first.month - 1]} {first.year}"
    if (first.month, first.day, last.month, last.day) == (1, 1, 12, 31) and first.year == last.year:
        return str(first.year)
    if first == last:
        return _date_text(first, language)
    if (first.year, first.month) == (last.year, last.month):
        return f"{_DAY[language].format(day=first.day)}–{_date_text(last, language)}"
    if first.year == last.year:
        return f"{_day_month(first, language)} – {_date_text(last, language)}"
    return f"{_date_text(first, language)} – {_date_text(last, language)}"


def _group(count: int, language: str) -> str:
    return f"{count:,}".replace(",", _THOUSANDS[language])


def pages_text(count: int, language: str) -> str:
    """A page count in words: "1 page", "3 pages"; "3 Seiten"; "3 pagina's"."""
    _check_language(language)
    one, many = _PAGES[language]
    return f"{_group(count, language)} {one if count == 1 else many}"


def format_hours(hours: float | timedelta, language: str) -> str:
    """A duration in hours: "24 hours", "1 Stunde", "1,5 uur"."""
    _check_language(language)
    value = hours.total_seconds() / 3600 if isinstance(hours, timedelta) else float(hours)
    number = f"{value:g}".replace(".", _DECIMAL[language])
    one, many = _HOURS[language]
    return f"{number} {one if value == 1 else many}"


# Parsing.


def _parse(source: str, *, allowed: frozenset[str], part: str, path: Path, template: str, language: str) -> list[_Line]:
    """Split ``source`` into lines of literal text and placeholders, refusing anything but ``{name}``."""

    def fail(problem: str, placeholder: str | None = None) -> TemplateError:
        return TemplateError(problem, path=path, template=template, language=language, placeholder=placeholder)

    lines: list[_Line] = []
    for line_number, line in enumerate(source.split("\n"), start=1):
        segments: list[_Segment] = []
        literal: list[str] = []
        position = 0
        for match in _TOKEN.finditer(line):
            literal.append(line[position : match.start()])
            position = match.end()
            token = match.group(0)
            if token in ("{{", "}}"):
                literal.append(token[0])
                continue
            where = f"in {part}, line {line_number}" if part != "subject" else "in subject"
            if token in ("{", "}"):
                raise fail(f"unmatched {token!r} {where}; write {token * 2} for a literal brace")
            content = match.group(1)
            if _NAME.fullmatch(content):
                if content not in allowed:
                    raise fail(
                        f"unknown placeholder {token} {where}; allowed: "
                        + ", ".join(f"{{{name}}}" for name in sorted(allowed)),
                        content,
                    )
                if part == "subject" and content in _MULTILINE:
                    raise fail(f"placeholder {token} is a block of lines and cannot go into the subject", content)
                if part == "subject" and content in _FORBIDDEN_IN_SUBJECT.get(template, frozenset()):
                    raise fail(f"placeholder {token} must not appear in the subject", content)
                if literal:
                    segments.append("".join(literal))
                    literal = []
                segments.append(_Field(content))
                continue
            head = re.split(r"[.\[!:]", content, maxsplit=1)[0].strip()
            if "." in content or "[" in content:
                problem = "attribute and index access are not allowed"
            elif ":" in content or "!" in content:
                problem = "format specs and conversions are not supported (values are formatted for you)"
            else:
                problem = "a placeholder is a lower-case name such as {to}"
            raise fail(f"invalid placeholder {token} {where}: {problem}", head or content)
        literal.append(line[position:])
        if "".join(literal):
            segments.append("".join(literal))
        lines.append(tuple(segments))
    return lines


def _load_file(path: Path, name: str, language: str) -> _Template:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TemplateError(
            f"the file cannot be read: {exc.strerror or exc}", path=path, template=name, language=language
        ) from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise TemplateError("the file is not UTF-8", path=path, template=name, language=language) from exc
    except tomllib.TOMLDecodeError as exc:
        raise TemplateError(f"the file is not valid TOML: {exc}", path=path, template=name, language=language) from exc
    unknown = sorted(set(data) - _FILE_KEYS)
    if unknown:
        raise TemplateError(
            f"unknown key(s) {', '.join(unknown)}; a template has subject, text and optionally html",
            path=path,
            template=name,
            language=language,
        )
    for key in ("subject", "text"):
        if key not in data:
            raise TemplateError(f"the file has no {key}", path=path, template=name, language=language)
    for key, value in data.items():
        if not isinstance(value, str):
            raise TemplateError(f"{key} must be a string", path=path, template=name, language=language)
    subject_source = data["subject"].strip()
    if not subject_source:
        raise TemplateError("the subject is empty", path=path, template=name, language=language)
    if _UNSAFE.search(subject_source):
        raise TemplateError(
            "the subject must be one line without control characters", path=path, template=name, language=language
        )
    for key in ("text", "html"):
        if key in data and _BODY_CONTROL.search(data[key]):
            raise TemplateError(f"the {key} holds a control character", path=path, template=name, language=language)
    allowed = PLACEHOLDERS[name]

    def parse(source: str, part: str) -> list[_Line]:
        return _parse(source, allowed=allowed, part=part, path=path, template=name, language=language)

    subject = parse(subject_source, "subject")
    text = parse(data["text"].strip("\n"), "text")
    html = parse(data["html"].strip("\n"), "html") if "html" in data else None
    used = {segment.name for line in text for segment in line if isinstance(segment, _Field)}
    missing = sorted(_REQUIRED_IN_TEXT.get(name, frozenset()) - used)
    if missing:
        raise TemplateError(
            f"the text must contain {{{missing[0]}}}",
            path=path,
            template=name,
            language=language,
            placeholder=missing[0],
        )
    return _Template(
        name=name,
        language=language,
        path=path,
        subject=subject[0],
        text=tuple(text),
        html=tuple(html) if html is not None else None,
    )


def _scan(directory: Path) -> dict[tuple[str, str], Path]:
    """The template files below ``directory`` by (language, name); refuses a ``.toml`` that is no template."""
    found: dict[tuple[str, str], Path] = {}
    for entry in sorted(directory.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            if entry.suffix == ".toml":
                raise TemplateError(
                    f"a template belongs in a language folder ({', '.join(f'{lang}/' for lang in LANGUAGES)})",
                    path=entry,
                )
            continue
        if not entry.is_dir():
            continue
        if entry.name not in LANGUAGES:
            if any(entry.glob("*.toml")):
                raise TemplateError(f"unknown language folder; known: {', '.join(LANGUAGES)}", path=entry)
            continue
        for file in sorted(entry.glob("*.toml")):
            if file.stem not in TEMPLATE_NAMES:
                raise TemplateError(f"unknown template {file.stem!r}; known: {', '.join(TEMPLATE_NAMES)}", path=file)
            found[(entry.name, file.stem)] = file
    return found


def default_templates_dir() -> Path:
    """Where the shipped templates are.

    In this order: ``config/templates/`` beside the ``bridge`` package (a source checkout, and an editable
    install such as ``make`` makes); ``<prefix>/share/faxbridge/templates/`` (an installation that copied them
    as data files); ``/usr/share/faxbridge/templates/`` (a distribution package). Raises ``TemplateError``
    naming every place looked at when none has them.
    """
    candidates = _default_candidates()
    for candidate in candidates:
        if (candidate / LANGUAGES[0]).is_dir():
            return candidate
    raise TemplateError(
        "the shipped mail templates were not found; looked in " + ", ".join(str(path) for path in candidates)
    )


def _default_candidates() -> list[Path]:
    return [
        Path(__file__).resolve().parent.parent / "config" / "templates",
        Path(sys.prefix) / "share" / "faxbridge" / "templates",
        Path("/usr/share/faxbridge/templates"),
    ]


# Values.


def _one_line(text: str) -> str:
    """One line without control characters; runs of white space collapse to one space."""
    return " ".join(_UNSAFE.sub(" ", text).split())


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _block_lines(value: object, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        raw = _LINE_BREAK.split(value)
    elif isinstance(value, Sequence) and all(isinstance(item, str) for item in value):
        raw = [line for item in value for line in _LINE_BREAK.split(item)]
    else:
        raise TypeError(f"{{{name}}} takes a string or a sequence of strings, not {type(value).__name__}")
    lines = [_shorten(_UNSAFE_KEEP_TAB.sub(" ", line).rstrip(), _VALUE_LIMIT) for line in raw]
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    return lines


def _scalar(name: str, value: object, language: str, tz: str) -> str:
    """One value as text, before cleaning."""
    if value is None:
        return ""
    if name == "pages":
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{{pages}} takes an int or None, not {type(value).__name__}")
        return _group(value, language) if value > 0 else ""
    if name in _COUNTS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{{{name}}} takes an int, not {type(value).__name__}")
        return _group(value, language)
    if name == "grace":
        if isinstance(value, bool) or not isinstance(value, int | float | timedelta):
            raise TypeError(f"{{grace}} takes hours (a number) or a timedelta, not {type(value).__name__}")
        seconds = value.total_seconds() if isinstance(value, timedelta) else float(value) * 3600
        return format_hours(value, language) if seconds > 0 else ""
    if name == "period" and isinstance(value, tuple):
        if len(value) != 2 or not all(isinstance(day, date) for day in value):
            raise TypeError("{period} takes text or a (first, last) pair of dates")
        return format_period(value[0], value[1], language)
    if isinstance(value, datetime):
        return format_datetime(value, language, tz)
    if isinstance(value, date):
        return format_date(value, language, tz)
    if isinstance(value, bool):
        raise TypeError(f"{{{name}}} does not take a bool")
    if isinstance(value, str | int | float):
        return str(value)
    raise TypeError(f"{{{name}}} takes text, a number or a date, not {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class _Values:
    body: Mapping[str, str]
    """Every allowed placeholder; blocks with their lines joined by newlines."""
    subject: Mapping[str, str]
    """The same on one line, shortened, without the sender's subject and its suffix."""
    theirs: str
    """The sender's subject, on one line."""


def _prepare(
    name: str, language: str, values: Mapping[str, object], *, account: str | None, tz: str, when: datetime
) -> _Values:
    allowed = PLACEHOLDERS[name]
    for key in values:
        if key in _DERIVED:
            raise ValueError(f"{{{key}}} is computed by the template system; do not pass it")
        if key not in allowed:
            raise ValueError(
                f"{{{key}}} is no placeholder of template {name!r}; allowed: {', '.join(sorted(allowed - _DERIVED))}"
            )
    given = dict(values)
    if account is not None:
        given.setdefault("account", account)
    body: dict[str, str] = {}
    for key in sorted(allowed - _DERIVED):
        value = given.get(key)
        if key in _MULTILINE:
            body[key] = "\n".join(_block_lines(value, key))
        else:
            body[key] = _shorten(_one_line(_scalar(key, value, language, tz)), _VALUE_LIMIT)
    for key in sorted(_REQUIRED_VALUES.get(name, frozenset())):
        if not body.get(key, "").strip():
            raise ValueError(f"template {name!r} needs a value for {{{key}}}")
    if "caller" in allowed and not body["caller"]:
        body["caller"] = _UNKNOWN_CALLER[language]
    if "status" in allowed and not body["status"]:
        body["status"] = _STATUS[language].get(name, "")
    if "pages_text" in allowed:
        pages = given.get("pages")
        # _scalar has checked it: an int, and a positive one when body["pages"] is not empty.
        body["pages_text"] = pages_text(pages, language) if body["pages"] and isinstance(pages, int) else ""
        body["pages_suffix"] = f" — {body['pages_text']}" if body["pages_text"] else ""
    if "reason_suffix" in allowed:
        body["reason_suffix"] = f": {body['reason']}" if body["reason"] else ""
    body["date"] = format_date(when, language, tz)
    body["time"] = format_time(when, language, tz)
    theirs = body.get("subject", "")
    if "subject_suffix" in allowed:
        body["subject_suffix"] = f" (Re: {theirs})" if theirs else ""
    # Body values are one line already (blocks aside); a subject shortens them, and its suffixes keep their
    # leading space. The sender's subject and its suffix are built by _render_subject.
    subject = {
        key: _shorten(value, _SUBJECT_VALUE_LIMIT)
        for key, value in body.items()
        if key not in _MULTILINE and key not in ("subject", "subject_suffix", "reason_suffix", "pages_suffix")
    }
    if "pages_suffix" in allowed:
        subject["pages_suffix"] = body["pages_suffix"]
    if "reason_suffix" in allowed:
        subject["reason_suffix"] = f": {subject['reason']}" if subject["reason"] else ""
    return _Values(body=MappingProxyType(body), subject=MappingProxyType(subject), theirs=_one_line(theirs))


# Rendering.


def _fields(line: _Line) -> list[str]:
    return [segment.name for segment in line if isinstance(segment, _Field)]


def _substitute(line: _Line, values: Mapping[str, str], *, escape: bool = False) -> str:
    """One template line with its values; a block's lines repeat the prefix before it (see the module doc)."""
    out: list[str] = []
    for segment in line:
        if isinstance(segment, str):
            out.append(segment)
            continue
        value = values[segment.name]
        if segment.name in _MULTILINE and "\n" in value:
            block = value.split("\n")
            if escape:
                out.append("<br>\n".join(html_lib.escape(part) for part in block))
                continue
            before = "".join(out)
            prefix = before if _BLOCK_PREFIX.fullmatch(before) else ""
            out.append(("\n" + prefix).join(block))
            continue
        out.append(html_lib.escape(value) if escape else value)
    return "".join(out)


def _empty(line: _Line, values: Mapping[str, str]) -> bool:
    names = _fields(line)
    return bool(names) and all(not values[name].strip() for name in names)


def _wrap(line: str) -> list[str]:
    if len(line) <= _WIDTH:
        return [line]
    match = _BLOCK_PREFIX.match(line)
    prefix = match.group(0) if match else ""
    indent = prefix if not prefix.strip() else " " * len(prefix)
    wrapped = textwrap.wrap(
        line[len(prefix) :],
        _WIDTH,
        initial_indent=prefix,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
        replace_whitespace=False,
    )
    return wrapped or [line]


def _render_text(lines: Sequence[_Line], values: Mapping[str, str]) -> str:
    glued = {key: value.replace(" ", _GLUE) if key in _KEEP_TOGETHER else value for key, value in values.items()}
    paragraphs: list[list[_Line]] = [[]]
    for line in lines:
        if not _fields(line) and not "".join(segment for segment in line if isinstance(segment, str)).strip():
            paragraphs.append([])
        else:
            paragraphs[-1].append(line)
    out: list[str] = []
    for paragraph in paragraphs:
        kept = [line for line in paragraph if not _empty(line, values)]
        if len(kept) < len(paragraph) and len(kept) == 1 and not _fields(kept[0]):
            heading = "".join(segment for segment in kept[0] if isinstance(segment, str)).rstrip()
            if heading.endswith(":"):
                kept = []
        if not kept:
            continue
        if out:
            out.append("")
        for line in kept:
            for physical in _substitute(line, glued).split("\n"):
                text = physical.rstrip()
                if text == "--":
                    out.append("-- ")
                    continue
                out.extend(part.rstrip() for part in _wrap(text))
    return "\n".join(out).replace(_GLUE, " ") + "\n"


def _render_html(lines: Sequence[_Line], values: Mapping[str, str]) -> str:
    return "\n".join(_substitute(line, values, escape=True) for line in lines if not _empty(line, values)) + "\n"


def _render_subject(line: _Line, prepared: _Values) -> str:
    names = set(_fields(line))

    def build(theirs: str) -> str:
        values = dict(prepared.subject)
        values["subject"] = theirs
        values["subject_suffix"] = f" (Re: {theirs})" if theirs else ""
        return _one_line(_substitute(line, values))

    theirs = _shorten(prepared.theirs, _ECHOED_SUBJECT)
    subject = build(theirs)
    if len(subject) > SUBJECT_LIMIT and theirs and names & {"subject", "subject_suffix"}:
        excess = len(subject) - SUBJECT_LIMIT
        theirs = _shorten(theirs, max(_ECHOED_SUBJECT_MIN, len(theirs) - excess))
        subject = build(theirs)
    return _shorten(subject, SUBJECT_LIMIT)


class Templates:
    """Every template in every language, checked, with the per-account overrides; ``load`` makes one."""

    def __init__(
        self,
        templates: Mapping[tuple[str, str], _Template],
        overrides: Mapping[str, Mapping[tuple[str, str], _Template]],
    ) -> None:
        self._templates = dict(templates)
        self._overrides = {account: dict(files) for account, files in overrides.items()}

    @classmethod
    def load(cls, base_dir: Path | None = None, overrides: Mapping[str, Path] | None = None) -> Templates:
        """Read and check the templates in ``base_dir`` and the overrides per account.

        ``base_dir`` defaults to ``default_templates_dir()``; it must hold ``<language>/<name>.toml`` for every
        language and template. ``overrides`` maps an account name to a directory of the same layout holding
        only the templates that account replaces. Raises ``TemplateError`` for a missing directory or file, a
        file that does not parse, an unknown key, language or template file, and any placeholder that is not
        allowed where it is used.
        """
        base = Path(base_dir) if base_dir is not None else default_templates_dir()
        if not base.is_dir():
            raise TemplateError("the template directory does not exist", path=base)
        present = _scan(base)
        templates: dict[tuple[str, str], _Template] = {}
        for language in LANGUAGES:
            for name in TEMPLATE_NAMES:
                path = base / language / f"{name}.toml"
                if (language, name) not in present:
                    raise TemplateError("the template file is missing", path=path, template=name, language=language)
                templates[(language, name)] = _load_file(path, name, language)
        replaced: dict[str, dict[tuple[str, str], _Template]] = {}
        for account, directory in (overrides or {}).items():
            folder = Path(directory)
            if not folder.is_dir():
                raise TemplateError(
                    f"the template override directory of account {account!r} does not exist", path=folder
                )
            replaced[account] = {
                (language, name): _load_file(path, name, language) for (language, name), path in _scan(folder).items()
            }
        return cls(templates, replaced)

    def source(self, name: str, language: str, *, account: str | None = None) -> Path:
        """The file ``render`` would use for this template, language and account."""
        return self._pick(name, language, account).path

    def _pick(self, name: str, language: str, account: str | None) -> _Template:
        if name not in TEMPLATE_NAMES:
            raise ValueError(f"unknown template {name!r}; known: {', '.join(TEMPLATE_NAMES)}")
        _check_language(language)
        if account is not None:
            override = self._overrides.get(account, {}).get((language, name))
            if override is not None:
                return override
        return self._templates[(language, name)]

    def render(
        self,
        name: str,
        language: str,
        values: Mapping[str, object],
        *,
        account: str | None = None,
        tz: str = "UTC",
        when: datetime | None = None,
    ) -> Rendered:
        """Render template ``name`` in ``language`` with ``values`` (see the module doc for each placeholder).

        ``account`` chooses that account's override where it has one, and is ``{account}`` unless ``values``
        says otherwise; ``tz`` is the account's IANA time zone for every date and time; ``when`` is the moment
        of ``{date}`` and ``{time}`` (default: now). Raises ``ValueError`` for an unknown template, language or
        value name, a value computed here (``{pages_text}``…), or a missing required value (``{to}`` of a
        notice, ``{service}`` of ``handed_over``, ``{key}``, ``{summary}``); ``TypeError`` for a value of the
        wrong type; ``ConfigError`` for an unknown time zone.
        """
        template = self._pick(name, language, account)
        _zone(tz)
        moment = when if when is not None else datetime.now(UTC)
        prepared = _prepare(name, language, values, account=account, tz=tz, when=moment)
        return Rendered(
            subject=_render_subject(template.subject, prepared),
            text=_render_text(template.text, prepared.body),
            html=_render_html(template.html, prepared.body) if template.html is not None else None,
        )
