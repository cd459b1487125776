"""Small defects at 5 MP: tiled inference against the whole frame, side by side in one run.

    .venv/bin/python bench/tiles.py [--frames 24] [--seconds 20]

Frames of the synthetic line at 2592x1944 whose defects are 8-24 px (`min_defect_px=8&max_defect_px=24`: parts
scale with the frame, defects do not), seed 3200, rendered once and judged against their ground truth:
- recall per class (a defect is found when a box of its class overlaps it with IoU >= 0.3), at the rules'
  default threshold (0.7, what counts as a sighting) and at the model's floor (0.25, what it reports), for the
  whole frame letterboxed to the model's input, the tiles (320 px, overlap 0.2: daemon/detect/tiles.py) and the
  tiles with the full-frame pass; boxes at the threshold that match no defect, per frame;
- the model's time per frame for each (Detector.infer_inputs, one stream, inputs prepared as the daemon
  prepares them), and the CPU cost of decoding one 5 MP frame sent as JPEG (quality 90, as an MJPG camera);
- the daemon itself (`python -m daemon run`, a real mosquitto, frames mode) on a 5 MP synthetic camera at 2 fps
  for `--seconds`, whole frame and tiled: frames inspected and dropped per second, capture-to-commit age p50/p99
  (the stats topic's frame_age_ms; MQTT sees an event only after its commit) and capture-to-MQTT p50/p99 (each
  defect event's captured_at against its arrival at a subscriber on this machine).
Saves bench/results/tiles.{json,md} and tiles.png: a tiled frame, its grid, the ground truth and what was found.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from harness import broker, daemon_env, free_port, metric, mqtt_client, percentile, running_daemon, save, wait_ready
from machine import describe

os.environ.setdefault("YOLO_OFFLINE", "1")
W, H, SEED = 2592, 1944, 3200
LINE = f"synthetic://line?width={W}&height={H}&min_defect_px=8&max_defect_px=24&defect_rate=0.6&seed={SEED}&speed=40"
THRESHOLDS = {"rules (0.7)": 0.7, "floor (0.25)": 0.25}
MODES = ("whole frame", "tiles", "tiles + whole frame")


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w, h = min(a[2], b[2]) - max(a[0], b[0]), min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def offline(frames: int, model: Path) -> tuple[dict[str, Any], Any]:
    import cv2
    import numpy as np

    from daemon.buffers import BufferPool
    from daemon.detect.model import Detector
    from daemon.detect.tiles import Tiler, whole_frame
    from daemon.frames import Frame, utc_now
    from daemon.settings import ModelSettings
    from daemon.settings.cameras import TileSettings
    from daemon.synthetic.line import LineParams, SyntheticLine
    from daemon.synthetic.params import CLASS_NAMES

    detector = Detector(ModelSettings(path=model, device="cpu"))
    detector.warm_up(W, H, 2)
    tilers = {"tiles": Tiler(TileSettings(size=320), detector.imgsz),  # type: ignore[call-arg]
              "tiles + whole frame": Tiler(TileSettings(size=320, full_frame=True),  # type: ignore[call-arg]
                                           detector.imgsz)}
    detector.warm_up(320, 320, 2)
    line = SyntheticLine(LineParams.from_url(LINE))
    pool = BufferPool()
    counts = {m: {t: {c: [0, 0] for c in CLASS_NAMES} for t in THRESHOLDS} for m in MODES}
    stray = {m: {t: 0 for t in THRESHOLDS} for m in MODES}
    model_ms: dict[str, list[float]] = {m: [] for m in MODES}
    decode_ms: list[float] = []
    picture = None
    for index in range(0, frames * 20, 20):  # a part passes in about 32 frames: every frame a new view
        rendered = line.render(index)
        _, jpeg = cv2.imencode(".jpg", rendered.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        started = time.thread_time()
        cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
        decode_ms.append((time.thread_time() - started) * 1000)
        for mode in MODES:
            tiler = tilers.get(mode)
            grid = tiler.grid(W, H) if tiler is not None else ()
            # as the daemon does: the whole frame letterboxed on the capture side, the tiles by the detector
            prepared = detector.prepare(rendered.image, pool) if tiler is None or tiler.full_frame else None
            frame = Frame("bench", index, rendered.image, 0.0, utc_now(), prepared)
            inputs = tiler.inputs(frame) if tiler is not None else whole_frame(frame)
            found, elapsed = detector.infer_inputs(inputs)
            model_ms[mode].append(elapsed)
            boxes = tiler.merge(inputs, found) if tiler is not None else found[0]
            for label, floor in THRESHOLDS.items():
                kept = [d for d in boxes if d.confidence >= floor]
                for truth in rendered.defects:
                    tb = (truth.x1, truth.y1, truth.x2, truth.y2)
                    hit = any(d.class_id == truth.class_id and _iou(tb, (d.bbox.x1, d.bbox.y1, d.bbox.x2,
                                                                        d.bbox.y2)) >= 0.3 for d in kept)
                    counts[mode][label][truth.label][0] += 1
                    counts[mode][label][truth.label][1] += hit
                truth_boxes = [(t.x1, t.y1, t.x2, t.y2) for t in rendered.defects]
                stray[mode][label] += sum(1 for d in kept if not any(
                    _iou(tb, (d.bbox.x1, d.bbox.y1, d.bbox.x2, d.bbox.y2)) > 0 for tb in truth_boxes))
            if picture is None and mode == "tiles" and rendered.defects:
                picture = _draw(np, cv2, rendered.image, grid, rendered.defects, boxes)
    recall = {m: {t: {c: (hit / n if n else None) for c, (n, hit) in counts[m][t].items()} for t in THRESHOLDS}
              for m in MODES}
    overall = {m: {t: sum(h for _, h in counts[m][t].values()) / max(1, sum(n for n, _ in counts[m][t].values()))
                   for t in THRESHOLDS} for m in MODES}
    return {"frames": frames, "defects": sum(n for n, _ in counts["tiles"]["floor (0.25)"].values()),
            "tiles_per_frame": len(tilers["tiles"].grid(W, H)), "backend": detector.backend_name,
            "recall": recall, "recall_all": overall,
            "stray_per_frame": {m: {t: stray[m][t] / frames for t in THRESHOLDS} for m in MODES},
            "model_ms_per_frame": {m: statistics.median(v) for m, v in model_ms.items()},
            "decode_jpeg_5mp_ms": statistics.median(decode_ms)}, picture


def _draw(np: Any, cv2: Any, image: Any, grid: Any, truths: Any, boxes: Any) -> Any:
    canvas = image.copy()
    for x1, y1, x2, y2 in grid:
        cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), (255, 200, 0), 1)
    for t in truths:
        cv2.rectangle(canvas, (int(t.x1) - 6, int(t.y1) - 6), (int(t.x2) + 6, int(t.y2) + 6), (0, 0, 255), 3)
    for d in boxes:
        if d.confidence >= 0.25:
            cv2.rectangle(canvas, (int(d.bbox.x1), int(d.bbox.y1)), (int(d.bbox.x2), int(d.bbox.y2)), (0, 255, 0), 2)
    whole = cv2.resize(canvas, (W // 3, H // 3), interpolation=cv2.INTER_AREA)
    t = truths[0]
    cx, cy = int((t.x1 + t.x2) / 2), int((t.y1 + t.y2) / 2)
    x0, y0 = min(max(0, cx - 160), W - 320), min(max(0, cy - 160), H - 320)
    crop = cv2.resize(canvas[y0:y0 + 320, x0:x0 + 320], (H // 3, H // 3), interpolation=cv2.INTER_NEAREST)
    cv2.putText(whole, "5 MP frame: 320 px tiles (blue), truth (red), found tiled (green)", (10, 24),
                cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
    cv2.putText(crop, f"native 320 px around a {t.label} of {int(t.x2 - t.x1)}x{int(t.y2 - t.y1)} px", (10, 24),
                cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2)
    return np.concatenate([whole, crop], axis=1)


def live(seconds: float, tiled: bool, broker_url: str, model: Path) -> dict[str, Any]:
    port = free_port()
    stats: list[dict[str, Any]] = []
    got = threading.Event()

    mqtt_ms: list[float] = []  # per defect event: received here - captured_at (one clock: this machine's)
    measuring = threading.Event()

    def on_message(_client: Any, _data: Any, message: Any) -> None:
        received = dt.datetime.now(dt.timezone.utc)
        if message.retain:  # an earlier run's, kept by the broker
            return
        payload = json.loads(message.payload)
        if message.topic.endswith("/defects"):
            if measuring.is_set():
                mqtt_ms.append((received - dt.datetime.fromisoformat(payload["captured_at"])).total_seconds() * 1e3)
            return
        stats.append(payload)
        got.set()

    extra = {"LINEWATCH_EVENTS__MODE": "frames", "LINEWATCH_EVENTS__STATS_INTERVAL_S": str(seconds),
             "LINEWATCH_MODEL__DEVICE": "cpu", "LINEWATCH_CAMERA__ID": "big", "LINEWATCH_MODEL__PATH": str(model)}
    if tiled:
        extra["LINEWATCH_CAMERA__TILES"] = "{}"
    with tempfile.TemporaryDirectory() as state:
        env = daemon_env(LINE + "&fps=2", broker_url, Path(state), port, **extra)
        client = mqtt_client(broker_url, ["linewatch/big/stats", "linewatch/big/defects"], on_message)
        try:
            with running_daemon(env) as process:
                wait_ready(port, process)
                read0, inspected0 = metric(port, "linewatch_frames_read_total"), metric(
                    port, "linewatch_frames_inspected_total")
                dropped0, started = metric(port, "linewatch_frames_dropped_total"), time.monotonic()
                got.clear()
                stats.clear()
                measuring.set()
                got.wait(seconds * 3 + 30)  # the first stats message after ready: one interval later
                measuring.clear()
                elapsed = time.monotonic() - started
                read, inspected = metric(port, "linewatch_frames_read_total"), metric(
                    port, "linewatch_frames_inspected_total")
                dropped = metric(port, "linewatch_frames_dropped_total")
        finally:
            client.loop_stop()
            client.disconnect()
    age = stats[-1]["frame_age_ms"] if stats else {"p50": None, "p99": None}
    return {"read_fps": (read - read0) / elapsed, "inspected_fps": (inspected - inspected0) / elapsed,
            "dropped_fps": (dropped - dropped0) / elapsed, "age_p50_ms": age["p50"], "age_p99_ms": age["p99"],
            "events": len(mqtt_ms), "mqtt_p50_ms": percentile(mqtt_ms, 50), "mqtt_p99_ms": percentile(mqtt_ms, 99)}


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--model", type=Path, default=None, help="weights (default: the shipped model)")
    args = parser.parse_args()
    from daemon.settings import DEFAULT_MODEL

    model = args.model or Path(DEFAULT_MODEL)
    figures, picture = offline(args.frames, model)
    with broker() as mosquitto:
        daemon = {"whole frame": live(args.seconds, False, mosquitto.url, model),
                  "tiles": live(args.seconds, True, mosquitto.url, model)}
    machine = describe()
    report = {"benchmark": "tiles", "machine": machine, "line": LINE, "model": str(model), **figures, "daemon": daemon}
    rows = "".join(
        f"| {m} | {figures['recall_all'][m]['rules (0.7)']:.2f} | {figures['recall_all'][m]['floor (0.25)']:.2f} | "
        f"{figures['stray_per_frame'][m]['rules (0.7)']:.1f} | {figures['model_ms_per_frame'][m]:.0f} |\n"
        for m in MODES)
    per_class = "".join(
        f"| {c} | " + " | ".join(_ratio(figures['recall'][m][t][c]) for t in THRESHOLDS for m in MODES) + " |\n"
        for c in figures["recall"]["tiles"]["rules (0.7)"])
    live_rows = "".join(
        f"| {m} | {d['read_fps']:.2f} | {d['inspected_fps']:.2f} | {d['dropped_fps']:.2f} | {_ms(d['age_p50_ms'])} | "
        f"{_ms(d['age_p99_ms'])} | {d['events']} | {_ms(d['mqtt_p50_ms'])} | {_ms(d['mqtt_p99_ms'])} |\n"
        for m, d in daemon.items())
    table = (f"# Small defects at 5 MP: tiles against the whole frame\n\nMachine: {machine['cpu_model']}, "
             f"{machine['cpus']} CPUs; backend {figures['backend']}. {args.frames} frames of `{LINE}` "
             f"({figures['defects']} defects of 8-24 px); {figures['tiles_per_frame']} tiles of 320 px (overlap 0.2) "
             f"per frame. Decoding one 5 MP JPEG frame: {figures['decode_jpeg_5mp_ms']:.1f} ms of CPU.\n\n"
             "| inputs | recall at 0.7 | recall at 0.25 | boxes at 0.7 on no defect, per frame | model ms/frame |\n"
             "|---|---:|---:|---:|---:|\n" + rows
             + "\n| class | " + " | ".join(f"{m} at {v}" for v in THRESHOLDS.values() for m in MODES) + " |\n|---|"
             + "---:|" * len(MODES) * len(THRESHOLDS) + "\n" + per_class
             + f"\nThe daemon, frames mode, the camera at 2 fps, {args.seconds:g} s (age: capture to commit, from the "
             "stats topic; to MQTT: capture to each defect event's arrival at a subscriber on this machine):\n\n"
             "| inputs | read fps | inspected fps | dropped fps | age p50 ms | age p99 ms | events | to MQTT p50 ms "
             "| to MQTT p99 ms |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
             + live_rows)
    out = save("tiles", report, table)
    if picture is not None:
        import cv2

        cv2.imwrite(str(out.with_suffix(".png")), picture, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
