"""A stand-in for ``python -m daemon`` used only to test ``DaemonProcess`` itself.

Logs JSON lines like the real daemon, one non-JSON line, a line on stderr, and
shuts down on SIGTERM with exit code 0 (or ``--exit-code N`` at once).
"""

from __future__ import annotations

import json
import signal
import sys
import threading


def log(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--exit-code"]:
        log("exiting", code=int(argv[1]))
        return int(argv[1])
    stop = threading.Event()
    # The handler only sets the flag; the main thread does the shutdown work.
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    log("started", args=argv)
    print("not json", flush=True)
    print("a warning on stderr", file=sys.stderr, flush=True)
    stop.wait()
    log("shutdown", reason="SIGTERM")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
