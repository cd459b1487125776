"""Event-level evaluation of the daemon itself: it runs on a held-out synthetic stream and publishes over MQTT;
what a subscriber receives is scored against the generator's ground truth.

    .venv/bin/python models/evaluate_daemon.py --url "synthetic://line?seed=5000" --frames 20000 \
        --json models/eval-daemon.json

`--mode defects` (the daemon's default) scores one event per physical defect (models/evaluate_defects.py);
`--mode frames` scores the per-frame events (schema linewatch.frame_defects/1) as the earlier model card did.

The daemon is started exactly as in production (`python -m daemon run`) with `realtime=false`, so its hand-off
waits and every frame is inspected; an embedded broker on loopback carries the events. The figures
(defective-part recall, false events per 1,000 good parts) come from `models/evaluate.py:score_events`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from daemon.ops.embedded_broker import EmbeddedBroker  # noqa: E402
from daemon.synthetic.line import LineParams  # noqa: E402
from models.evaluate import score_events  # noqa: E402
from models.evaluate_defects import score_defects  # noqa: E402


class Collector:
    """A QoS 1 subscriber that keeps every defect payload."""

    def __init__(self, port: int) -> None:
        self.payloads: list[dict[str, Any]] = []
        self._lock = threading.Condition()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id="linewatch-eval")
        self._client.on_connect = lambda c, *_: c.subscribe("linewatch/+/defects", qos=1)
        self._client.on_message = self._on_message
        self._subscribed = threading.Event()
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("subscriber did not get its SUBACK")

    def _on_message(self, _: paho.Client, __: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.payloads.append(json.loads(message.payload))
            self._lock.notify_all()

    def wait_for(self, count: int, timeout: float) -> None:
        with self._lock:
            self._lock.wait_for(lambda: len(self.payloads) >= count, timeout)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def run_daemon(url: str, frames: int, model: Path, broker_url: str, state_dir: str, mode: str,
               tiles: str | None = None, motion_px: float | None = None,
               min_confidence: float | None = None) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINEWATCH_")}
    env.update({
        "LINEWATCH_CAMERA__URL": f"{url}&frames={frames}&realtime=false",
        "LINEWATCH_MODEL__PATH": str(model),
        "LINEWATCH_MQTT__URL": broker_url,
        "LINEWATCH_MQTT__PROTOCOL": "3.1.1",  # the embedded broker speaks 3.1.1
        "LINEWATCH_OUTBOX__DIR": state_dir,
        "LINEWATCH_LOG__FORMAT": "json",
        "LINEWATCH_EVENTS__MODE": mode,
        "LINEWATCH_HTTP__ENABLED": "false",
        "YOLO_OFFLINE": "1",
        **({"LINEWATCH_CAMERA__TILES": tiles} if tiles is not None else {}),
        **({"LINEWATCH_CAMERA__MOTION_PX": str(motion_px)} if motion_px is not None else {}),
        **({"LINEWATCH_RULES__MIN_CONFIDENCE": str(min_confidence)} if min_confidence is not None else {}),
    })
    proc = subprocess.run([sys.executable, "-m", "daemon", "run"], env=env, cwd=REPO, capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"daemon exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return next(r for r in records if r.get("event") == "shutdown_complete")


def above(events: list[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
    """The events the daemon would have published at a higher confidence threshold."""
    kept = []
    for event in events:
        detections = [d for d in event["detections"] if d["confidence"] >= threshold]
        if detections:
            kept.append({**event, "detections": detections})
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="synthetic://line?seed=5000", help="held-out line (seed not trained on)")
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--model", type=Path, default=REPO / "models" / "linewatch-defects.pt")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--mode", choices=("defects", "frames"), default="defects", help="the daemon's event mode")
    parser.add_argument("--events-out", type=Path, default=None, help="also save every received event (JSON lines)")
    parser.add_argument("--tiles", default=None, help="tiled inference, as LINEWATCH_CAMERA__TILES takes it (JSON; "
                        "'{}': every default), for frames of several megapixels")
    parser.add_argument("--motion-px", type=float, default=None, help="the line's motion per frame, as "
                        "LINEWATCH_CAMERA__MOTION_PX takes it (a 5 MP line: its speed= in the URL)")
    parser.add_argument("--min-confidence", type=float, default=None, help="the sighting threshold, as "
                        "LINEWATCH_RULES__MIN_CONFIDENCE takes it (a threshold sweep runs below the lowest it tries)")
    parser.add_argument("--thresholds", default="", help="also re-score at these confidence thresholds, e.g. "
                        "0.6,0.7 (an operating-point sweep: choose on a validation seed, report on the test seed)")
    args = parser.parse_args(argv)

    broker = EmbeddedBroker()
    broker.start()
    collector = Collector(broker.port)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="linewatch-eval-") as state_dir:
            summary = run_daemon(args.url, args.frames, args.model, broker.url, state_dir, args.mode, args.tiles,
                                  args.motion_px, args.min_confidence)
        collector.wait_for(summary["published"], timeout=30)
    finally:
        collector.close()
        broker.stop()
    elapsed = time.monotonic() - started
    if args.events_out:
        args.events_out.write_text("".join(json.dumps(p) + "\n" for p in collector.payloads))
    params = LineParams.from_url(f"{args.url}&frames={args.frames}")
    if args.mode == "defects":
        figures = score_defects(collector.payloads, params, frames=args.frames)
    else:
        figures = score_events(collector.payloads, params)
    thresholds = [t for t in args.thresholds.split(",") if t] if args.mode == "frames" else []
    sweep = {t: score_events(above(collector.payloads, float(t)), params) for t in thresholds}
    result = {
        "command": "models/evaluate_daemon.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "url": args.url,
        "frames": args.frames,
        "mode": args.mode,
        "tiles": args.tiles,
        "motion_px": args.motion_px,
        "min_confidence": args.min_confidence,
        "daemon": {k: summary[k] for k in ("frames_read", "frames_inspected", "frames_dropped", "events",
                                           "published")},
        "received_over_mqtt": len(collector.payloads),
        "wall_s": round(elapsed, 1),
        "figures": figures,
        "figures_by_threshold": {t: {k: f[k] for k in ("defective_part_recall", "false_events_per_1000_good_parts",
                                                       "good_parts_with_false_event", "good_parts")}
                                 for t, f in sweep.items()},
    }
    print(json.dumps(result, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
