"""The Modbus register map: one block of holding registers per camera, the handshake smart cameras use.

Addresses are 0-based (the PDU's; a PLC that counts from 1 or from 40001 adds that). The n-th camera with inspection
jobs (in camera id order, from 0) has the block at n * BLOCK_SIZE. The machine-readable copy is
`docs/plc/modbus-map.json`; docs/plc.md has the table and the timing; tests/plc/test_modbus.py checks the server
against the file.

Control (the PLC writes; reads back what it wrote):
    0  CONTROL        bit 0 TriggerEnable, bit 1 Trigger (rising edge starts a job), bit 2 ResultAck (rising edge)
    1  PART_ID_HI     the next part's id, a 32-bit number (0: none, the daemon makes one up), high word
    2  PART_ID_LO     low word
Status (the daemon writes; read-only to the PLC):
    10 STATUS         bits: see StatusBit
    11 HEARTBEAT      +1 every HEARTBEAT_S while the daemon runs (wraps at 65535)
    12 ERROR          the last error: see ErrorCode (cleared by the next accepted trigger)
    13 RESULT_PART_HI the presented result's part id (its number; 0 when it has none that is a number)
    14 RESULT_PART_LO
    15 RESULT_CODE    0 none, 1 OK (pass), 2 NotOK (ng), 3 NotDecidable (unknown): OPC 40001-101's order
    16 RESULT_SEQ     the verdict's seq on MQTT, low 16 bits (0: the outbox could not store it)
    17 RESULT_REASONS bits: why it is unknown (ReasonBit)
    18 DEFECT_COUNT   defect classes found
    19 DEFECT_CLASSES bit n: class id n was found (ids 0..15)
    20 LATENCY_MS     trigger to verdict, in ms (at most 65535)
    21 RESULTS_WAITING results not yet acknowledged, the presented one included
    22 JOBS_OPEN      jobs triggered and not yet decided
"""

from __future__ import annotations

import enum

BLOCK_SIZE = 100
HEARTBEAT_S = 0.5

CONTROL, PART_ID_HI, PART_ID_LO = 0, 1, 2
STATUS, HEARTBEAT, ERROR = 10, 11, 12
RESULT_PART_HI, RESULT_PART_LO, RESULT_CODE, RESULT_SEQ, RESULT_REASONS = 13, 14, 15, 16, 17
DEFECT_COUNT, DEFECT_CLASSES, LATENCY_MS, RESULTS_WAITING, JOBS_OPEN = 18, 19, 20, 21, 22
CONTROL_WORDS = 3  # 0..2 writable
STATUS_FIRST, STATUS_LAST = 10, 22


class ControlBit(enum.IntEnum):
    TRIGGER_ENABLE = 0
    TRIGGER = 1
    RESULT_ACK = 2


class StatusBit(enum.IntEnum):
    READY = 0  # a trigger now would be inspected: enabled, camera online, model ready, a job free
    BUSY = 1  # at least one job is open
    TRIGGER_ACK = 2  # the trigger was taken (a job started); cleared when the PLC clears Trigger
    RESULT_VALID = 3  # a result is presented (13..20); cleared on ResultAck
    RESULT_OK = 4
    RESULT_NG = 5
    RESULT_UNKNOWN = 6
    INSPECTION_COMPLETED = 7  # toggles with every result presented
    RESULT_OVERRUN = 8  # a result was lost: the buffer was full (the PLC did not acknowledge in time)
    RESULT_EXPIRED = 9  # a result went stale in the buffer and was not presented (LINEWATCH_MODBUS__FRESH_MS)
    ERROR = 10  # ERROR (12) holds a code


class ErrorCode(enum.IntEnum):
    NONE = 0
    TRIGGER_DISABLED = 1  # a trigger while TriggerEnable was off: not taken
    CAMERA_NOT_READY = 2  # taken, but the camera or the model is not ready: the verdict will be unknown
    OVERRUN = 3  # a result was lost to a full buffer
    EXPIRED = 4  # a result went stale before it could be presented
    TRIGGER_REFUSED = 5  # the daemon took no job (it is stopping, or its job stage is stuck): no TriggerAck


RESULT_CODES = {"pass": 1, "ng": 2, "unknown": 3}
REASON_BITS = {"camera_stale": 0, "camera_reconnecting": 1, "model_not_ready": 2, "frames_dropped": 3,
               "frame_late": 4, "timeout": 5, "trigger_overrun": 6, "stopping": 7, "frame_missing": 8}


def describe() -> dict[str, object]:
    """The map as data: what docs/plc/modbus-map.json holds."""
    words = {
        "CONTROL": (CONTROL, "rw", {b.name: int(b) for b in ControlBit}),
        "PART_ID_HI": (PART_ID_HI, "rw", None), "PART_ID_LO": (PART_ID_LO, "rw", None),
        "STATUS": (STATUS, "r", {b.name: int(b) for b in StatusBit}),
        "HEARTBEAT": (HEARTBEAT, "r", None), "ERROR": (ERROR, "r", {c.name: int(c) for c in ErrorCode}),
        "RESULT_PART_HI": (RESULT_PART_HI, "r", None), "RESULT_PART_LO": (RESULT_PART_LO, "r", None),
        "RESULT_CODE": (RESULT_CODE, "r", {"NONE": 0, **{k.upper(): v for k, v in RESULT_CODES.items()}}),
        "RESULT_SEQ": (RESULT_SEQ, "r", None),
        "RESULT_REASONS": (RESULT_REASONS, "r", {k.upper(): v for k, v in REASON_BITS.items()}),
        "DEFECT_COUNT": (DEFECT_COUNT, "r", None), "DEFECT_CLASSES": (DEFECT_CLASSES, "r", None),
        "LATENCY_MS": (LATENCY_MS, "r", None), "RESULTS_WAITING": (RESULTS_WAITING, "r", None),
        "JOBS_OPEN": (JOBS_OPEN, "r", None),
    }
    return {
        "table": "holding registers (function codes 3, 6, 16, 23), 0-based, one block per camera",
        "block_size": BLOCK_SIZE,
        "block_of_camera": "the n-th camera with inspection jobs, in camera id order (from 0), at n * block_size",
        "heartbeat_s": HEARTBEAT_S,
        "registers": {name: {"offset": offset, "access": access, **({"values": values} if values else {})}
                      for name, (offset, access, values) in words.items()},
    }
