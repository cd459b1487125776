"""The detector stage with the real model: batches across cameras, fair service, per-camera counters.

The cameras are the real synthetic line (a live one paced at its fps, or an unpaced one that always has a
frame, like a file read at full speed) through the real capture stage; no broker is needed here."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from daemon.backoff import Backoff
from daemon.detect.model import Detector, precision_options
from daemon.detect.stage import DetectStage, Lane
from daemon.detect.tiles import ModelInput, Tiler, whole_frame
from daemon.frames import END_OF_STREAM, BBox, Detection, Frame, Inference, utc_now
from daemon.handoff import Bell, DropPolicy, Handoff
from daemon.metrics import Metrics
from daemon.pipeline import Prepare
from daemon.settings import ModelSettings
from daemon.settings.cameras import TileSettings
from daemon.sources.capture import CaptureStage
from daemon.sources.factory import SourceOptions, build_source
from daemon.sources.url import parse_camera_url
from daemon.synthetic.line import LineParams, SyntheticLine
from tests.conftest import write_line_video

pytestmark = pytest.mark.slow  # outside the unit tier (pyproject.toml: markers)


@pytest.fixture(scope="module")
def detector(model_path: Path) -> Detector:
    loaded = Detector(ModelSettings(path=model_path, imgsz=320))
    loaded.warm_up(640, 480, 1)  # as the daemon does before its cameras start: each stream set up
    return loaded


def _iou(box_a: BBox, box_b: BBox) -> float:
    a, b = (box_a.x1, box_a.y1, box_a.x2, box_a.y2), (box_b.x1, box_b.y1, box_b.x2, box_b.y2)
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_a_batch_that_mixes_frame_sizes_gives_each_frame_its_own_boxes_in_its_own_pixels(detector: Detector) -> None:
    # Three frames of three sizes in one batch: each is letterboxed on its own and scaled back to its own size.
    sizes = ((640, 480), (320, 240), (960, 544))
    images = [SyntheticLine(LineParams(width=w, height=h, seed=40 + i, defect_rate=1.0, noise=0)).render(30).image
              for i, (w, h) in enumerate(sizes)]
    batched, _ = detector.infer_batch(images)
    assert len(batched) == 3
    for image, (width, height), found in zip(images, sizes, batched, strict=True):
        alone, _ = detector.infer(image)
        assert found, f"nothing found on the {width}x{height} frame"
        for d in found:
            assert -1 <= d.bbox.x1 < d.bbox.x2 <= width + 1 and -1 <= d.bbox.y1 < d.bbox.y2 <= height + 1
        # The same defects as the frame alone (a lone frame is letterboxed to its aspect, a mixed batch to a square,
        # so confidences move a little): every confident detection alone has a same-class twin in the batch.
        for d in (d for d in alone if d.confidence >= 0.6):
            twins = [b for b in found if b.class_id == d.class_id and _iou(b.bbox, d.bbox) > 0.6]
            assert twins, f"{d} found alone, not in the mixed batch ({width}x{height})"


def test_a_stall_in_the_middle_of_a_batch_s_nms_loses_no_frame_s_detections(detector: Detector,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Ultralytics' NMS gives up after 2 s (plus 50 ms a frame) and leaves the batch's later frames with nothing, a
    # warning its only trace. A process held that long in the middle of it (a VM paused, a starved CPU quota, a
    # SIGSTOP: bench/box_limit.py holds processes on purpose and saw the warning) must still get every frame's
    # detections. What NMS sees of such a stall is its clock jumping: here 3 s at every reading (the only fake).
    images = [SyntheticLine(LineParams(seed=60 + i, defect_rate=1.0, noise=0)).render(30).image for i in range(4)]
    inputs = [whole_frame(Frame("c", i, image, 0.0, utc_now(), detector.prepare(image)))[0]
              for i, image in enumerate(images)]
    assert all(item.tensor is not None for item in inputs), "the daemon's path: letterboxed on the capture thread"
    steady, _ = detector.infer_inputs(inputs)
    assert all(steady), "every frame of the line has a defect"
    import ultralytics.utils.nms as nms

    clock = itertools.count(start=1000.0, step=3.0)
    monkeypatch.setattr(nms, "time", SimpleNamespace(time=lambda: next(clock)))
    stalled, _ = detector.infer_inputs(inputs)
    assert stalled == steady


@dataclass
class _Camera:
    camera_id: str
    capture: CaptureStage
    lane: Lane


def _camera(camera_id: str, url: str, policy: DropPolicy, bell: Bell, stop: threading.Event,
            metrics: Metrics, tiles: TileSettings | None = None, prepare: Prepare | None = None) -> _Camera:
    frames: Handoff[Frame] = Handoff(f"frames:{camera_id}", 1 if policy is DropPolicy.LATEST else 8, policy, stop,
                                     on_drop=metrics.frames_dropped.labels(camera_id).inc, bell=bell)
    results: Handoff[Inference] = Handoff(f"results:{camera_id}", 10_000, DropPolicy.WAIT, stop)
    source = build_source(parse_camera_url(url), SourceOptions(realtime=False))  # a file: as fast as it decodes
    capture = CaptureStage(camera_id, source, frames, stop, backoff=Backoff(0.1, 1.0), stall_timeout_s=10.0,
                           on_status=lambda status: None, metrics=metrics, prepare=prepare)
    return _Camera(camera_id, capture, Lane(camera_id, frames, results, None if tiles is None else Tiler(tiles, 320)))


@pytest.fixture
def run_cameras(detector: Detector) -> Iterator[object]:
    stops: list[threading.Event] = []

    def run(cameras: dict[str, tuple[str, DropPolicy]], *, max_batch: int, until: int, watch: str,
            tiles: dict[str, TileSettings] | None = None, captures: dict[str, CaptureStage] | None = None,
            ) -> tuple[Metrics, dict[str, list[Inference]], list[tuple[int, ...]]]:
        """Run until camera `watch` has had `until` frames inspected; return the metrics, each camera's
        results and the batches: each the identities of its inputs' images (a whole frame's is its frame's).
        `captures`, when given, gets each camera's capture stage, its frames letterboxed there as the daemon's."""
        stop, bell, metrics = threading.Event(), Bell(), Metrics()
        stops.append(stop)
        prepare = detector.prepare if captures is not None else None
        built = {cid: _camera(cid, url, policy, bell, stop, metrics, (tiles or {}).get(cid), prepare)
                 for cid, (url, policy) in cameras.items()}
        if captures is not None:
            captures.update({cid: camera.capture for cid, camera in built.items()})
        batches: list[tuple[int, ...]] = []
        real_infer = detector.infer_inputs

        def counting(inputs: list[ModelInput], stream: int = 0) -> tuple[list[tuple[Detection, ...]], float]:
            batches.append(tuple(id(item.image) for item in inputs))  # one call per pass: its inputs
            return real_infer(inputs, stream)

        detector.infer_inputs = counting  # type: ignore[method-assign]  # observe, not replace: the real model runs
        stage = DetectStage(detector, [c.lane for c in built.values()], bell, stop, max_batch=max_batch,
                            batch_wait_s=0.005, metrics=metrics)
        try:
            stage.start()
            for camera in built.values():
                camera.capture.start()
            results: dict[str, list[Inference]] = {cid: [] for cid in built}
            watched = built[watch].lane.results
            while len(results[watch]) < until:
                item = watched.get(60.0)
                assert item is not None and item is not END_OF_STREAM, "the detector stopped serving the camera"
                results[watch].append(item)  # type: ignore[arg-type]
            stop.set()
            for camera in built.values():
                assert camera.capture.join(10)
            assert stage.join(30)
            for cid, camera in built.items():  # the rest, after the stop: the detector drained every slot
                while (item := camera.lane.results.get(0.0)) not in (None, END_OF_STREAM):
                    results[cid].append(item)  # type: ignore[arg-type]
            return metrics, results, batches
        finally:
            detector.infer_inputs = real_infer  # type: ignore[method-assign]
            stop.set()

    yield run
    for stop in stops:
        stop.set()


@pytest.mark.parametrize("max_batch", [1, 4], ids=["batching off", "batching on"])
def test_a_camera_that_always_has_a_frame_does_not_starve_a_5_fps_one(run_cameras: object, max_batch: int) -> None:
    # Given a camera that floods the detector (unpaced: it always has a frame waiting, like a file read at full
    # speed) and a live 5 fps camera
    metrics, results, batches = run_cameras(  # type: ignore[operator]
        {"flood": ("synthetic://line?realtime=false&seed=1", DropPolicy.WAIT),
         "slow": ("synthetic://line?fps=5&seed=2", DropPolicy.LATEST)},
        max_batch=max_batch, until=12, watch="slow")
    # Then every frame of the slow camera is inspected (none replaced in its slot while it waited) ...
    read = metrics.value("linewatch_frames_read_total", camera="slow")
    assert metrics.value("linewatch_frames_dropped_total", camera="slow") == 0
    assert metrics.value("linewatch_frames_inspected_total", camera="slow") >= read - 1
    assert [r.frame.seq for r in results["slow"]] == list(range(len(results["slow"])))
    # ... while the flooding camera got the rest of the model's time
    assert metrics.value("linewatch_frames_inspected_total", camera="flood") > 2 * len(results["slow"])
    assert max(map(len, batches)) <= max_batch


def test_a_file_camera_s_waiting_frames_share_one_inference_and_reach_its_events_in_order(
        run_cameras: object, detector: Detector) -> None:
    # Given one camera that always has frames waiting (unpaced, like a file read at full speed: its hand-off holds
    # its read-ahead and loses nothing), alone: before the fix every inference took one of its frames
    metrics, results, batches = run_cameras(  # type: ignore[operator]
        {"file": ("synthetic://line?realtime=false&seed=3", DropPolicy.WAIT)}, max_batch=4, until=60, watch="file")
    frames = results["file"]
    seq_of = {id(result.frame.image): result.frame.seq for result in frames}
    taken = [[seq_of[image] for image in batch] for batch in batches]
    # Then inferences took several of its waiting frames at once: at most max_batch, and at most its read-ahead
    # (8) shared among the model's streams, so that each stream has frames to work on ...
    assert max(map(len, taken)) == min(4, 8 // detector.streams), [len(batch) for batch in taken]
    # ... each batch a run of its frames in the order it handed them over, and every frame inspected once, in
    # order, none dropped (its results reach its event stage in frame order whichever inference ends first)
    for batch in taken:
        assert batch == list(range(batch[0], batch[0] + len(batch))), batch
    assert [r.frame.seq for r in frames] == list(range(len(frames)))
    assert sorted(seq for batch in taken for seq in batch) == list(range(len(frames)))
    assert metrics.value("linewatch_frames_dropped_total", camera="file") == 0
    assert metrics.value("linewatch_frames_inspected_total", camera="file") == len(frames)


def test_a_file_read_at_full_speed_cycles_through_a_fixed_set_of_buffers_while_its_frames_are_batched(
        run_cameras: object, detector: Detector, tmp_path: Path) -> None:
    # Given a real video file decoded by OpenCV as fast as it goes, letterboxed on its capture thread as in the
    # daemon, its waiting frames batched by the detector (up to 8 waiting and 8 in the model's batches)
    video = write_line_video(tmp_path / "line.avi", seed=11, frames=150)
    captures: dict[str, CaptureStage] = {}
    _, results, batches = run_cameras(  # type: ignore[operator]
        {"file": (str(video), DropPolicy.WAIT)}, max_batch=8, until=150, watch="file", captures=captures)
    assert len(results["file"]) == 150 and max(map(len, batches)) > 1
    # Then the model's inputs came back to the capture's pool: it never ran out of free arrays (each new one would
    # cost the kernel's page faults, 0.4 ms a frame at 640x480: what the pool is for). (The decoded frames' own
    # pool cannot be seen here: this test keeps every result, and so every frame.)
    pool = captures["file"]._buffers
    assert pool.made <= pool.slots, (pool.made, pool.reused)
    assert pool.reused >= 150 - pool.made


def test_per_camera_counters_and_drops(run_cameras: object) -> None:
    # Given a live camera paced far beyond the model (its one-frame slot is replaced while the detector works)
    # and a slow live one, batched together
    metrics, results, batches = run_cameras(  # type: ignore[operator]
        {"fast": ("synthetic://line?fps=400&seed=5&width=320&height=240", DropPolicy.LATEST),
         "slow": ("synthetic://line?fps=4&seed=6", DropPolicy.LATEST)},
        max_batch=2, until=8, watch="slow")
    value = metrics.value
    # Then each camera's counters are its own: read = inspected + dropped (+ at most one left in its slot)
    for cid in ("fast", "slow"):
        read, inspected = value("linewatch_frames_read_total", camera=cid), value("linewatch_frames_inspected_total",
                                                                                    camera=cid)
        dropped = value("linewatch_frames_dropped_total", camera=cid)
        assert read - inspected - dropped in (0, 1), (cid, read, inspected, dropped)
        assert inspected == len(results[cid])
    assert value("linewatch_frames_dropped_total", camera="fast") > 0
    assert value("linewatch_frames_dropped_total", camera="slow") == 0
    # And frames of both cameras rode in the same batches
    assert 2 in map(len, batches)
    assert sum(map(len, batches)) == len(results["fast"]) + len(results["slow"])


def test_a_tiled_5_mp_camera_takes_at_most_its_share_of_each_batch_and_a_small_camera_loses_nothing(
        run_cameras: object) -> None:
    # Given a 5 MP camera cut into 80 tiles that the model cannot keep up with (its frames wait, none dropped), and
    # a live 5 fps camera beside it
    metrics, results, batches = run_cameras(  # type: ignore[operator]
        {"big": ("synthetic://line?fps=2&seed=7&width=2592&height=1944&min_defect_px=8&max_defect_px=24",
                 DropPolicy.WAIT),
         "slow": ("synthetic://line?fps=5&seed=8", DropPolicy.LATEST)},
        max_batch=2, until=10, watch="slow", tiles={"big": TileSettings(size=320, per_batch=4)})
    # Then no batch holds more than the tiled camera's share beside the other camera's frame ...
    assert max(map(len, batches)) <= 4
    # ... the small camera's frames were all inspected, in order, while the big one's were in the model ...
    assert metrics.value("linewatch_frames_dropped_total", camera="slow") == 0
    assert [r.frame.seq for r in results["slow"]] == list(range(len(results["slow"])))
    big = results["big"]
    assert len(results["slow"]) > len(big), "an 80-tile frame takes many passes; the small camera is served in them"
    # ... and each big frame came out once, whole: its boxes merged in the frame's own pixels
    assert big and [r.frame.seq for r in big] == list(range(len(big)))
    assert metrics.value("linewatch_frames_inspected_total", camera="big") == len(big)
    inputs = sum(map(len, batches))
    assert inputs == 80 * len(big) + len(results["slow"]), "every tile inspected once; none left half done"
    for result in big:
        for d in result.detections:
            assert 0 <= d.bbox.x1 < d.bbox.x2 <= 2592 and 0 <= d.bbox.y1 < d.bbox.y2 <= 1944


def test_fp16_asks_ultralytics_for_quantize_not_the_deprecated_half() -> None:
    # Before the fix the daemon passed half=True on CUDA: Ultralytics 8.4 logged a deprecation warning per frame
    # (1,303 lines in 25 s on an H200).
    from ultralytics.utils import DEFAULT_CFG_DICT

    accepted = frozenset(DEFAULT_CFG_DICT)
    assert "quantize" in accepted
    assert precision_options(True, "cuda:0", accepted) == {"quantize": 16}
    assert precision_options(True, "cpu", accepted) == {}  # CPU runs FP32; passing anything would be warned about
    assert precision_options(False, "cuda:0", accepted) == {}
    assert precision_options(True, "cuda:0", accepted - {"quantize"}) == {"half": True}  # an older Ultralytics


@pytest.mark.gpu
def test_batched_fp16_inference_on_cuda_matches_fp32_without_warnings(model_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    images = [SyntheticLine(LineParams(seed=60 + i, defect_rate=1.0)).render(25).image for i in range(8)]
    fp32 = Detector(ModelSettings(path=model_path, device="cuda:0"))
    fp16 = Detector(ModelSettings(path=model_path, device="cuda:0", half=True))
    with caplog.at_level("WARNING"):
        found16, _ = fp16.infer_batch(images)
        found16, _ = fp16.infer_batch(images)
    found32, _ = fp32.infer_batch(images)
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]
    for a, b in zip(found16, found32, strict=True):
        strong = [d for d in b if d.confidence >= 0.6]
        assert all(any(x.class_id == d.class_id and _iou(x.bbox, d.bbox) > 0.8 for x in a)
                   for d in strong)
    assert np.isfinite([d.confidence for found in found16 for d in found]).all()


def test_the_thread_count_survives_the_first_inference(model_path: Path) -> None:
    # Before the fix, Ultralytics' select_device() reset torch to cores - 1 threads when the predictor was set up
    # at the first inference: the daemon ran its whole life on one thread of a 2-core box.
    torch = pytest.importorskip("torch")
    detector = Detector(ModelSettings(path=model_path, threads=2, device="cpu"))
    assert torch.get_num_threads() == 2
    detector.warm_up(320, 240, 1)
    assert torch.get_num_threads() == 2
    detector.infer(np.zeros((240, 320, 3), dtype=np.uint8))
    assert torch.get_num_threads() == 2
