"""The baseline for bench/pipeline.py: ``bridge.converters.convert_message`` alone, in a loop.

Reads one raw message from ``--message``, converts it once (warm-up: imports, fonts, caches), then converts
it ``--count`` times in this one thread and prints one JSON line: ``{"count", "elapsed", "pages", "bytes"}``.
This is the irreducible CPU work per fax; the pipeline's faxes/s divided by this loop's conversions/s shows
what the rest (SMTP, the store's commits, the provider's fsyncs, notices, logging) costs on the same core.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bridge.converters import convert_message


def main() -> None:
    """Convert the message ``--count`` times and print the timing as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--message", type=Path, required=True, help="file holding one raw RFC 5322 message")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop early after this long")
    args = parser.parse_args()
    raw = args.message.read_bytes()
    first = convert_message(raw)
    done = 0
    started = time.perf_counter()
    deadline = started + args.max_seconds
    while done < args.count and time.perf_counter() < deadline:
        convert_message(raw)
        done += 1
    elapsed = time.perf_counter() - started
    print(json.dumps({"count": done, "elapsed": elapsed, "pages": first.pages, "bytes": len(first.document)}))


if __name__ == "__main__":
    main()
