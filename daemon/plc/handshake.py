"""One camera's block of the Modbus map and its handshake (modbus_map.py has the map). Pure: no sockets, no threads;
modbus.py runs it on its server's loop.

Trigger: the PLC writes PART_ID, then sets Trigger; the daemon starts a job and sets TriggerAck; the PLC clears
Trigger; the daemon clears TriggerAck. A trigger while TriggerEnable is off is not taken (ERROR = TRIGGER_DISABLED, no
TriggerAck). Result: the daemon presents a verdict (RESULT_* words) and sets ResultValid with OK / NG / Unknown and
toggles InspectionCompleted; the PLC reads it and sets ResultAck; the daemon clears ResultValid; the PLC clears
ResultAck; the daemon presents the next waiting result, if any.

Results wait, in order, for the PLC's acknowledgement in a small buffer. The PLC output is live: a result goes to the
PLC at most once, and only while fresh (`fresh_s` from its verdict): one that went stale in the buffer is dropped
(RESULT_EXPIRED), one that finds the buffer full is lost to it (RESULT_OVERRUN); both are counted, and MQTT has every
verdict regardless.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Sequence

from daemon.events.job_stage import Decided, TriggerRefused
from daemon.plc.modbus_map import (
    BLOCK_SIZE,
    CONTROL,
    CONTROL_WORDS,
    DEFECT_CLASSES,
    DEFECT_COUNT,
    ERROR,
    HEARTBEAT,
    JOBS_OPEN,
    LATENCY_MS,
    PART_ID_HI,
    PART_ID_LO,
    REASON_BITS,
    RESULT_CODE,
    RESULT_CODES,
    RESULT_PART_HI,
    RESULT_PART_LO,
    RESULT_REASONS,
    RESULT_SEQ,
    RESULTS_WAITING,
    STATUS,
    ControlBit,
    ErrorCode,
    StatusBit,
)

Trigger = Callable[[str], object]  # part id ('' for none) -> the job's trigger


def _bit(word: int, bit: int) -> bool:
    return bool(word >> bit & 1)


def part_number(part_id: str) -> int:
    """A part id as the 32-bit number the map carries (0 when it is not one: '²' is a digit to Python, not to int)."""
    return int(part_id) if part_id.isascii() and part_id.isdecimal() and int(part_id) < 2**32 else 0


class Handshake:
    def __init__(self, trigger: Trigger, *, ready: Callable[[], bool], jobs_open: Callable[[], int],
                 buffer: int = 8, fresh_s: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 on_lost: Callable[[str], None] = lambda reason: None) -> None:
        self.registers = [0] * BLOCK_SIZE
        self._trigger = trigger
        self._ready = ready
        self._jobs_open = jobs_open
        self._waiting: collections.deque[Decided] = collections.deque()
        self._buffer = buffer
        self._fresh_s = fresh_s
        self._clock = clock
        self._on_lost = on_lost  # "overrun" | "expired": counted by the server
        self._presented: Decided | None = None
        self._completed = False
        self._sticky = 0  # overrun / expired bits, until the PLC's next ResultAck
        self.refresh()

    # -- the PLC's writes ---------------------------------------------------------------------------------------------
    def write(self, offset: int, values: Sequence[int]) -> None:
        """Words the PLC wrote at `offset` (within the control words; the server refuses the rest)."""
        before = self.registers[CONTROL]
        for index, value in enumerate(values):
            if offset + index < CONTROL_WORDS:
                self.registers[offset + index] = value & 0xFFFF
        after = self.registers[CONTROL]
        rose, fell = after & ~before, before & ~after
        if _bit(rose, ControlBit.TRIGGER):
            self._triggered(after)
        if _bit(fell, ControlBit.TRIGGER):
            self._set(StatusBit.TRIGGER_ACK, False)
        if _bit(rose, ControlBit.RESULT_ACK):
            self._presented = None
            self._sticky = 0
            self._set(StatusBit.RESULT_VALID, False)
        if _bit(fell, ControlBit.RESULT_ACK):
            self._present_next()
        self.refresh()

    def _triggered(self, control: int) -> None:
        if not _bit(control, ControlBit.TRIGGER_ENABLE):
            self.registers[ERROR] = ErrorCode.TRIGGER_DISABLED
            return
        number = self.registers[PART_ID_HI] << 16 | self.registers[PART_ID_LO]
        ready = self._ready()
        try:
            self._trigger(str(number) if number else "")
        except TriggerRefused:  # no job: no TriggerAck, so the PLC knows this part has no verdict coming
            self.registers[ERROR] = ErrorCode.TRIGGER_REFUSED
            return
        self.registers[ERROR] = ErrorCode.NONE if ready else ErrorCode.CAMERA_NOT_READY
        self._set(StatusBit.TRIGGER_ACK, True)

    # -- verdicts -----------------------------------------------------------------------------------------------------
    def result(self, decided: Decided) -> None:
        """A verdict of this camera (any trigger source): presented now, or waiting behind unacknowledged ones."""
        if len(self._waiting) >= self._buffer:
            self._lose(StatusBit.RESULT_OVERRUN, ErrorCode.OVERRUN, "overrun")
        else:
            self._waiting.append(decided)
            if self._presented is None and not _bit(self.registers[CONTROL], ControlBit.RESULT_ACK):
                self._present_next()
        self.refresh()

    def _present_next(self) -> None:
        while self._waiting and self._presented is None:
            decided = self._waiting.popleft()
            if self._clock() - decided.result.decided_mono > self._fresh_s:
                self._lose(StatusBit.RESULT_EXPIRED, ErrorCode.EXPIRED, "expired")
                continue
            self._show(decided)

    def _show(self, decided: Decided) -> None:
        result, regs = decided.result, self.registers
        number = part_number(result.trigger.part_id)
        regs[RESULT_PART_HI], regs[RESULT_PART_LO] = number >> 16, number & 0xFFFF
        regs[RESULT_CODE] = RESULT_CODES[result.verdict.value]
        regs[RESULT_SEQ] = (decided.seq or 0) & 0xFFFF
        regs[RESULT_REASONS] = sum(1 << REASON_BITS[reason.value] for reason in result.reasons)
        regs[DEFECT_COUNT] = len(result.findings)
        regs[DEFECT_CLASSES] = sum(1 << f.class_id for f in result.findings if f.class_id < 16) & 0xFFFF
        regs[LATENCY_MS] = min(0xFFFF, max(0, round(result.latency_ms)))
        for bit, code in ((StatusBit.RESULT_OK, 1), (StatusBit.RESULT_NG, 2), (StatusBit.RESULT_UNKNOWN, 3)):
            self._set(bit, regs[RESULT_CODE] == code)
        self._completed = not self._completed
        self._set(StatusBit.INSPECTION_COMPLETED, self._completed)
        self._set(StatusBit.RESULT_VALID, True)
        self._presented = decided

    def _lose(self, bit: StatusBit, code: ErrorCode, reason: str) -> None:
        self._sticky |= 1 << bit
        self.registers[ERROR] = code
        self._on_lost(reason)

    # -- the status word ----------------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Every HEARTBEAT_S: the heartbeat, and stale results dropped from the buffer."""
        self.registers[HEARTBEAT] = (self.registers[HEARTBEAT] + 1) & 0xFFFF
        fresh = [d for d in self._waiting if self._clock() - d.result.decided_mono <= self._fresh_s]
        for _ in range(len(self._waiting) - len(fresh)):
            self._lose(StatusBit.RESULT_EXPIRED, ErrorCode.EXPIRED, "expired")
        self._waiting = collections.deque(fresh)
        self.refresh()

    def refresh(self) -> None:
        """Ready, Busy, Error, the counts: the words that follow the daemon's state."""
        control, opened = self.registers[CONTROL], self._jobs_open()
        self._set(StatusBit.READY, _bit(control, ControlBit.TRIGGER_ENABLE) and self._ready())
        self._set(StatusBit.BUSY, opened > 0)
        self._set(StatusBit.RESULT_OVERRUN, _bit(self._sticky, StatusBit.RESULT_OVERRUN))
        self._set(StatusBit.RESULT_EXPIRED, _bit(self._sticky, StatusBit.RESULT_EXPIRED))
        self._set(StatusBit.ERROR, self.registers[ERROR] != ErrorCode.NONE)
        self.registers[RESULTS_WAITING] = min(0xFFFF, len(self._waiting) + (self._presented is not None))
        self.registers[JOBS_OPEN] = min(0xFFFF, opened)

    def _set(self, bit: StatusBit, on: bool) -> None:
        word = self.registers[STATUS]
        self.registers[STATUS] = word | 1 << bit if on else word & ~(1 << bit)
