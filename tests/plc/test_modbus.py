"""The Modbus TCP server against a real pymodbus client playing the PLC, every address read from the machine-readable
map (docs/plc/modbus-map.json); real job stages with a real outbox behind it. The model is not needed: the job stages
are fed inspected frames as the event stage would."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient

from daemon.events.job_stage import VERDICT, JobStage
from daemon.events.jobs import JobRules, Look
from daemon.frames import BBox, CameraState, CameraStatus, Detection, ModelInfo, utc_now
from daemon.metrics import Metrics
from daemon.outbox import Outbox, OutboxLimits
from daemon.plc.loop import PlcServerError
from daemon.plc.modbus import ModbusServer
from daemon.plc.modbus_map import describe
from tests.support.net import free_port

MAP_FILE = Path(__file__).resolve().parents[2] / "docs" / "plc" / "modbus-map.json"
MAP: dict[str, Any] = json.loads(MAP_FILE.read_text())
REG = {name: entry["offset"] for name, entry in MAP["registers"].items()}
BIT = {name: value for entry in MAP["registers"].values() for name, value in entry.get("values", {}).items()}
BLOCK = MAP["block_size"]
MODEL = ModelInfo("m", "0" * 64, 640, "cpu", ("scratch", "dent"))
SCRATCH = Detection("scratch", 0, 0.9, BBox(300, 100, 330, 120))
DEADLINE_S = 5.0


class Line:
    """Two cameras' job stages, their outbox, the Modbus server and a PLC client."""

    def __init__(self, tmp_path: Path, **server: Any) -> None:
        self.stop = threading.Event()
        self.outbox = Outbox(tmp_path / "o.db", OutboxLimits(10_000_000, 1e9, kind_max_bytes={VERDICT: 10_000_000}),
                             synchronous="NORMAL")
        self.metrics = Metrics()
        self.stages = [JobStage(camera, JobRules(frames=1, confirm_hits=1, timeout_ms=1000), MODEL,
                                self.outbox, self.stop, self.metrics) for camera in ("a", "b")]
        self.port = free_port()
        self.server = ModbusServer("127.0.0.1", self.port, self.stages, self.metrics,
                                   fresh_s=server.get("fresh_s", 5.0), buffer=server.get("buffer", 8))
        for stage in self.stages:
            stage.start()
            stage.camera_changed(CameraStatus(stage.camera_id, CameraState.ONLINE, "test", utc_now()))
        self.server.start()
        self.plc = ModbusTcpClient("127.0.0.1", port=self.port, timeout=3)
        assert self.plc.connect()
        self.seq = 0

    def close(self) -> None:
        self.plc.close()
        self.server.stop()
        for stage in self.stages:
            stage.stop()
            stage.join(5)
        self.outbox.close()

    def read(self, camera: int = 0) -> list[int]:
        answer = self.plc.read_holding_registers(camera * BLOCK, count=REG["JOBS_OPEN"] + 1)
        assert not answer.isError(), answer
        return list(answer.registers)

    def write(self, offset: int, words: list[int], camera: int = 0) -> None:
        answer = self.plc.write_registers(camera * BLOCK + offset, words)
        assert not answer.isError(), answer

    def bit(self, name: str, camera: int = 0) -> bool:
        return bool(self.read(camera)[REG["STATUS"]] >> BIT[name] & 1)

    def until(self, check: Callable[[list[int]], bool], camera: int = 0) -> list[int]:
        """Poll as a PLC's scan cycle does, to a deadline."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            words = self.read(camera)
            if check(words):
                return words
            time.sleep(0.01)
        raise AssertionError(f"not reached by the deadline: {self.read(camera)}")

    def frame(self, camera: int = 0, *detections: Detection) -> None:
        now = time.monotonic()
        self.stages[camera].look(Look(self.seq, now, utc_now(), now, 640, 480, detections))
        self.seq += 1

    def status(self, words: list[int], name: str) -> bool:
        return bool(words[REG["STATUS"]] >> BIT[name] & 1)

    def trigger(self, part: int, camera: int = 0) -> None:
        """Part id and Trigger (with TriggerEnable) in one request, then wait for TriggerAck and clear Trigger."""
        enable = 1 << BIT["TRIGGER_ENABLE"]
        self.write(REG["CONTROL"], [enable | 1 << BIT["TRIGGER"], part >> 16, part & 0xFFFF], camera)
        self.until(lambda w: self.status(w, "TRIGGER_ACK"), camera)
        self.write(REG["CONTROL"], [enable], camera)
        self.until(lambda w: not self.status(w, "TRIGGER_ACK"), camera)

    def acknowledge(self, camera: int = 0) -> None:
        enable = 1 << BIT["TRIGGER_ENABLE"]
        self.write(REG["CONTROL"], [enable | 1 << BIT["RESULT_ACK"]], camera)
        self.until(lambda w: not self.status(w, "RESULT_VALID"), camera)
        self.write(REG["CONTROL"], [enable], camera)


@pytest.fixture
def line(tmp_path: Path) -> Iterator[Line]:
    made = Line(tmp_path)
    yield made
    made.close()


def test_the_map_file_is_the_servers_map() -> None:
    assert json.loads(json.dumps(describe())) == MAP, "docs/plc/modbus-map.json is stale: regenerate it"


def test_each_trigger_gets_its_result_in_order_through_the_handshake_and_none_twice(line: Line) -> None:
    enable = 1 << BIT["TRIGGER_ENABLE"]
    line.write(REG["CONTROL"], [enable])
    assert line.until(lambda w: line.status(w, "READY"))
    results = []
    for part, defect in ((1001, False), (1002, True), (70_000, False)):
        line.trigger(part)
        line.frame(0, *((SCRATCH,) if defect else ()))
        words = line.until(lambda w: line.status(w, "RESULT_VALID"))
        results.append((words[REG["RESULT_PART_HI"]] << 16 | words[REG["RESULT_PART_LO"]], words[REG["RESULT_CODE"]],
                        words[REG["RESULT_SEQ"]], line.status(words, "INSPECTION_COMPLETED"),
                        words[REG["DEFECT_CLASSES"]]))
        assert line.status(words, "RESULT_NG") == defect and line.status(words, "RESULT_OK") != defect
        line.acknowledge()
    assert results == [(1001, 1, 1, True, 0), (1002, 2, 2, False, 1), (70_000, 1, 3, True, 0)]
    # MQTT has the same verdicts through the outbox, with the PLC's part ids
    stored = [json.loads(e.payload) for e in line.outbox.pending(10)]
    assert [(m["part_id"], m["trigger_source"]) for m in stored] == [
        ("1001", "plc_modbus"), ("1002", "plc_modbus"), ("70000", "plc_modbus")]
    # The heartbeat moves
    beat = line.read()[REG["HEARTBEAT"]]
    line.until(lambda w: w[REG["HEARTBEAT"]] != beat)


def test_a_trigger_while_disabled_is_not_taken_and_status_registers_are_read_only(line: Line) -> None:
    line.write(REG["CONTROL"], [1 << BIT["TRIGGER"]])
    words = line.until(lambda w: w[REG["ERROR"]] != 0)
    assert words[REG["ERROR"]] == BIT["TRIGGER_DISABLED"] and not line.status(words, "TRIGGER_ACK")
    assert line.status(words, "ERROR") and not line.status(words, "READY")
    assert line.stages[0].open_jobs == 0
    refused = line.plc.write_register(REG["STATUS"], 0xFFFF)
    assert refused.isError(), "the status word is the daemon's"


def test_the_blocks_of_two_cameras_are_independent(line: Line) -> None:
    line.write(REG["CONTROL"], [1 << BIT["TRIGGER_ENABLE"]], camera=1)
    line.trigger(77, camera=1)
    line.frame(1)
    words = line.until(lambda w: line.status(w, "RESULT_VALID"), camera=1)
    assert words[REG["RESULT_PART_LO"]] == 77
    assert not line.status(line.read(0), "RESULT_VALID") and not line.status(line.read(0), "READY")


def test_results_wait_for_the_plc_in_a_bounded_buffer_and_stale_ones_are_never_presented(tmp_path: Path) -> None:
    line = Line(tmp_path, buffer=2, fresh_s=1.0)
    try:
        enable = 1 << BIT["TRIGGER_ENABLE"]
        line.write(REG["CONTROL"], [enable])
        for part in (1, 2, 3, 4):  # four results, none acknowledged: one presented, two wait, one is lost
            line.trigger(part)
            line.frame()
            if part < 4:
                line.until(lambda w, n=part: w[REG["RESULTS_WAITING"]] == n)
        words = line.until(lambda w: line.status(w, "RESULT_OVERRUN"))
        assert line.status(words, "RESULT_OVERRUN") and words[REG["ERROR"]] == BIT["OVERRUN"]
        assert words[REG["RESULT_PART_LO"]] == 1
        line.acknowledge()
        assert line.until(lambda w: line.status(w, "RESULT_VALID"))[REG["RESULT_PART_LO"]] == 2
        assert not line.status(line.read(), "RESULT_OVERRUN"), "cleared by the acknowledgement"
        # The PLC waits past the freshness: part 3 went stale behind part 2 and is never presented
        line.until(lambda w: line.status(w, "RESULT_EXPIRED"))
        line.acknowledge()
        words = line.read()
        assert not line.status(words, "RESULT_VALID") and words[REG["RESULTS_WAITING"]] == 0
        lost = line.metrics.plc_results_lost
        assert lost.labels("modbus", "a", "overrun")._value.get() == 1  # type: ignore[attr-defined]
        assert lost.labels("modbus", "a", "expired")._value.get() == 1  # type: ignore[attr-defined]
        assert len(line.outbox.pending(10)) == 4, "MQTT has every verdict"
    finally:
        line.close()


def test_a_port_in_use_is_a_clear_error(line: Line, tmp_path: Path) -> None:
    other = ModbusServer("127.0.0.1", line.port, line.stages, Metrics(), fresh_s=1, buffer=1)
    with pytest.raises(PlcServerError, match="LINEWATCH_MODBUS__PORT"):
        other.start()


def test_a_trigger_the_daemon_cannot_take_gets_no_trigger_ack_and_says_why(line: Line) -> None:
    enable = 1 << BIT["TRIGGER_ENABLE"]
    line.write(REG["CONTROL"], [enable])
    line.stages[0].stop()  # the daemon stops: the camera's job stage takes no more triggers
    assert line.stages[0].join(5)
    line.write(REG["CONTROL"], [enable | 1 << BIT["TRIGGER"], 0, 42])
    words = line.until(lambda w: w[REG["ERROR"]] != 0)
    assert words[REG["ERROR"]] == BIT["TRIGGER_REFUSED"] and not line.status(words, "TRIGGER_ACK")


def test_a_part_id_that_is_not_an_ascii_number_is_carried_as_zero() -> None:
    from daemon.plc.handshake import part_number

    assert [part_number(p) for p in ("123", "²", "P-7", "", str(2**32))] == [123, 0, 0, 0, 0]
