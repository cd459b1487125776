"""Entry points: `linewatch run | check-config | doctor | demo | export | export-dataset`, and `--version`."""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from daemon import __version__
from daemon.exitcodes import ExitCode
from daemon.logs import get_logger
from daemon.settings import ConfigError, Settings, load_settings, masked_view, reference

if TYPE_CHECKING:
    from daemon.metrics import Metrics
    from daemon.ops.health import Health
    from daemon.ops.http import OpsHttpServer
    from daemon.outbox import Outbox


def _load_or_report() -> Settings | None:
    try:
        return load_settings()
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    if args.list or args.json or args.markdown:
        from daemon.settings.reference import as_json, as_markdown, as_text

        found = reference()
        sys.stdout.write(as_json(found) if args.json else as_markdown(found) if args.markdown else as_text(found))
        return ExitCode.OK
    settings = _load_or_report()
    if settings is None:
        return ExitCode.CONFIG
    print(json.dumps(masked_view(settings), indent=2, default=str))
    return ExitCode.OK


def cmd_run(_: argparse.Namespace) -> int:
    os.environ.setdefault("YOLO_OFFLINE", "1")  # before any Ultralytics import: no hub, no downloads
    settings = _load_or_report()
    if settings is None:
        return ExitCode.CONFIG
    from daemon.logs import NativeStderrRelay, configure_logging, get_logger
    from daemon.ops.memory import tune_allocator
    from daemon.ops.signals import install_stop_handlers

    allocator = tune_allocator()  # before any pipeline thread: frames stay on mmap, two arenas (ops/memory.py)
    configure_logging(settings.log.level, settings.log.format)
    log = get_logger("linewatch")
    relay = NativeStderrRelay()
    relay.start()
    stop = threading.Event()
    signals = install_stop_handlers(stop)
    log.info("starting", version=__version__, broker=settings.mqtt.url, pid=os.getpid(),
             cameras={c.camera_id: c.camera.source.kind.value for c in settings.camera_configs}, allocator=allocator)
    try:
        return _run_daemon(settings, stop, signals.report, relay.write_original)
    except Exception:
        log.exception("daemon_crashed")
        return ExitCode.INTERNAL
    finally:
        signals.report()
        relay.stop()


def _run_daemon(settings: Settings, stop: threading.Event, on_tick: Callable[[], None],
                stderr: Callable[[str], None]) -> int:
    from daemon.metrics import Metrics
    from daemon.ops.health import Health
    from daemon.ops.http import OpsHttpServer, OpsServerError

    metrics = Metrics()
    health = Health(metrics)
    server = None
    if settings.http.enabled:
        try:
            # Before the model loads: /healthz answers at once, /readyz says 503 until warm-up is done.
            server = OpsHttpServer(settings.http.host, settings.http.port, metrics, health,
                                   detect=settings.http.detect,
                                   detect_max_bytes=int(settings.http.detect_max_mb * (1 << 20)),
                                   detect_timeout_s=settings.http.detect_timeout_s)
        except OpsServerError as exc:
            get_logger("linewatch").error("http_unusable", error=str(exc), exit_code=int(ExitCode.BOOT))
            return ExitCode.BOOT
        server.start()
    try:
        return _boot_and_run(settings, stop, on_tick, metrics, health, stderr, server)
    finally:
        if server is not None:
            server.stop()


def _boot_and_run(settings: Settings, stop: threading.Event, on_tick: Callable[[], None], metrics: Metrics,
                  health: Health, stderr: Callable[[str], None], server: OpsHttpServer | None) -> int:
    from daemon.app import open_outbox
    from daemon.outbox import DropReport, OutboxError

    log = get_logger("linewatch")

    def on_drop(report: DropReport) -> None:  # counted at once; the outbox logs them, one line a second at most
        if report.kind == "snapshot":
            metrics.snapshots_dropped.labels(report.reason.value).inc(report.dropped)
        else:  # a defect event, or a dead letter (an event refused for good) beyond the dead letters' bound
            reason = report.reason.value if report.kind == "defect" else f"{report.kind}_{report.reason.value}"
            metrics.events_dropped.labels(reason).inc(report.dropped)

    try:  # before the model: a state directory that cannot be used is known in a moment, not after the load
        outbox = open_outbox(settings, on_drop)
    except (OutboxError, OSError) as exc:
        log.error("outbox_unusable", error=str(exc), dir=str(settings.outbox.dir), exit_code=int(ExitCode.BOOT))
        return ExitCode.BOOT
    try:
        return _load_model_and_run(settings, stop, on_tick, metrics, health, stderr, outbox, server)
    finally:
        outbox.close()


def _load_model_and_run(settings: Settings, stop: threading.Event, on_tick: Callable[[], None], metrics: Metrics,
                        health: Health, stderr: Callable[[str], None], outbox: Outbox,
                        server: OpsHttpServer | None) -> int:
    from daemon.app import App, warm_up_batch
    from daemon.detect.model import Detector, ModelLoadError
    from daemon.ops.fingerprint import fingerprint
    from daemon.settings.mqtt import TlsFilesError

    log = get_logger("linewatch")
    try:
        detector = Detector(settings.model)
        first = settings.camera_configs[0].camera
        width, height = first.width or 640, first.height or 480
        batch = warm_up_batch(settings, detector.streams)
        warm_ms = detector.warm_up(width, height, settings.model.warmup_runs, batch)
        for side, per_batch in sorted({(c.camera.tiles.size or detector.imgsz, c.camera.tiles.per_batch)
                                       for c in settings.camera_configs if c.camera.tiles is not None}):
            detector.warm_up(side, side, settings.model.warmup_runs, per_batch)  # a tiled camera's batches
        log.info("model_loaded", model=detector.info.name, sha256=detector.info.sha256[:16],
                 backend=detector.backend_name, weights=str(detector.weights), device=detector.device,
                 imgsz=detector.imgsz, classes=list(detector.info.classes), warmup_ms=round(warm_ms, 1),
                 warmup_batch=batch)
    except ModelLoadError as exc:
        log.error("model_load_failed", error=str(exc), exit_code=int(ExitCode.BOOT))
        return ExitCode.BOOT
    unknown = settings.unknown_classes(detector.info.classes)
    if unknown:  # only the loaded model knows its classes: checked here, reported like every config error
        stderr("".join(f"config error: {problem}\n" for problem in unknown))
        log.error("config_error", problems=unknown, exit_code=int(ExitCode.CONFIG))
        return ExitCode.CONFIG
    prints = fingerprint(detector.info.sha256, detector.device)
    metrics.build.info({**prints, "model_sha256": detector.info.sha256})
    if stop.is_set():
        return ExitCode.OK
    try:
        app = App(settings, stop, detector, outbox, metrics=metrics, health=health, fingerprint=prints)
    except TlsFilesError as exc:  # checked at start-up; replaced since by a file OpenSSL refuses
        stderr(f"config error: {exc}\n")
        log.error("config_error", problems=[str(exc)], exit_code=int(ExitCode.CONFIG))
        return ExitCode.CONFIG
    health.model_ready.set()
    if server is not None and settings.http.triggers:
        server.on_trigger = app.http_trigger
    if server is not None:
        server.detect = app.detect_api  # None unless LINEWATCH_HTTP__DETECT
    return app.run(on_tick)


def cmd_doctor(args: argparse.Namespace) -> int:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    settings = _load_or_report()
    if settings is None:
        return ExitCode.CONFIG
    from daemon.logs import configure_logging
    from daemon.ops.doctor import doctor

    configure_logging("error", "json", sys.stderr)  # the report is stdout; library chatter, if any, stderr
    return doctor(settings, as_json=args.json)


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """The container's HEALTHCHECK: GET /healthz where LINEWATCH_HTTP__HOST/PORT say the daemon serves it.
    0 healthy (or HTTP disabled: nothing to ask, said on stdout), 1 anything else (Docker's contract: 0 or 1)."""
    from daemon.ops.probe import probe_health
    from daemon.settings import http_settings

    try:
        http = http_settings()
    except ConfigError as exc:
        print(f"linewatch healthcheck: {'; '.join(exc.problems)}")
        return ExitCode.INTERNAL
    healthy, line = probe_health(http, args.path, args.timeout)
    print(line)
    return ExitCode.OK if healthy else ExitCode.INTERNAL


def cmd_dead_letters(args: argparse.Namespace) -> int:
    """List the events the broker refused for good, or put them back in the queue (--requeue)."""
    settings = _load_or_report()
    if settings is None:
        return ExitCode.CONFIG
    from daemon.app import OUTBOX_FILE, open_outbox
    from daemon.outbox import OutboxError

    if not (settings.outbox.dir / OUTBOX_FILE).is_file():
        print(f"no outbox at {settings.outbox.dir / OUTBOX_FILE} (LINEWATCH_OUTBOX__DIR)", file=sys.stderr)
        return ExitCode.BOOT
    try:
        with open_outbox(settings) as outbox:
            if args.requeue:
                print(f"{outbox.requeue_dead_letters()} dead letters back in the queue; the daemon sends them next")
                return ExitCode.OK
            letters = outbox.dead_letters(args.limit)
    except OutboxError as exc:
        print(f"outbox unusable: {exc}", file=sys.stderr)
        return ExitCode.BOOT
    if args.json:
        print(json.dumps([vars(letter) for letter in letters], indent=1))
    for letter in [] if args.json else letters:
        print(f"{letter.rowid:>8} {letter.camera_id} {letter.kind} seq {letter.seq} {letter.payload_bytes} B "
              f"{letter.output} 0x{letter.code:02x} {letter.reason} ({letter.address})")
    return ExitCode.OK


def cmd_demo(args: argparse.Namespace) -> int:
    from daemon.demo import run_demo

    return run_demo(seconds=args.seconds, camera_url=args.camera)


def cmd_export_dataset(args: argparse.Namespace) -> int:
    from daemon.tools.dataset import main as export_main

    return export_main(args.rest)


def cmd_export(args: argparse.Namespace) -> int:
    from daemon.tools.export import main as export_main

    return export_main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="linewatch", description="Edge inspection daemon: camera → YOLO → MQTT")
    parser.add_argument("--version", action="version", version=f"linewatch {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the daemon (configured by LINEWATCH_* variables)").set_defaults(
        handler=cmd_run
    )
    check = commands.add_parser("check-config", help="validate and print the effective settings")
    check.add_argument("--list", action="store_true", help="list every accepted variable with its default")
    check.add_argument("--json", action="store_true", help="the list as JSON: name, section, type, default, range, "
                       "description")
    check.add_argument("--markdown", action="store_true", help="the list as the configuration reference page "
                       "(docs/configuration.md)")
    check.set_defaults(handler=cmd_check_config)
    doctor = commands.add_parser("doctor", help="check what this deployment depends on (exit 3 if something "
                                 "required is missing)")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.set_defaults(handler=cmd_doctor)
    health = commands.add_parser("healthcheck", help="ask the running daemon's /healthz (the container's "
                                 "HEALTHCHECK); exit 0 healthy, 1 not")
    health.add_argument("--path", default="/healthz", choices=["/healthz", "/readyz"], help="which probe")
    health.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    health.set_defaults(handler=cmd_healthcheck)
    dead = commands.add_parser("dead-letters", help="list the events the broker refused for good (or --requeue "
                               "them once the cause is fixed)")
    dead.add_argument("--requeue", action="store_true", help="put them back in the queue, to be sent again")
    dead.add_argument("--json", action="store_true", help="print them as JSON")
    dead.add_argument("--limit", type=int, default=1000, help="list at most this many")
    dead.set_defaults(handler=cmd_dead_letters)
    demo = commands.add_parser("demo", help="synthetic line + embedded broker; prints the defect events")
    demo.add_argument("--seconds", type=float, default=0.0, help="stop after this long (0: until Ctrl-C)")
    demo.add_argument("--camera", default=None, help="camera URL (default: synthetic://line)")
    demo.set_defaults(handler=cmd_demo)
    model_export = commands.add_parser("export", help="make the ONNX, OpenVINO or TensorRT export of a .pt, "
                                       "checked against it", add_help=False)
    model_export.add_argument("rest", nargs=argparse.REMAINDER)
    model_export.set_defaults(handler=cmd_export)
    export = commands.add_parser("export-dataset", help="write a YOLO dataset from the synthetic line",
                                 add_help=False)
    export.add_argument("rest", nargs=argparse.REMAINDER)
    export.set_defaults(handler=cmd_export_dataset)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for stream in (sys.stdout, sys.stderr):  # a value with bytes that are not UTF-8 is escaped, never a crash
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    # The tools parse their own options (argparse's REMAINDER drops a leading "--option" after a subcommand).
    tools = {"export": cmd_export, "export-dataset": cmd_export_dataset}
    if argv and argv[0] in tools:
        return int(tools[argv[0]](argparse.Namespace(rest=argv[1:])))
    args = build_parser().parse_args(argv)
    return int(args.handler(args))
