"""The Modbus TCP server for the line's PLC (pymodbus): one block of holding registers per camera (modbus_map.py), the
handshake of handshake.py, on its own thread (`plc:modbus`) running an asyncio loop.

Everything that touches the registers runs on that loop: the PLC's requests (through pymodbus' access hook), the
verdicts (handed over from the job stages' threads with call_soon_threadsafe) and the heartbeat. A PLC that connects
and never speaks, or many that do, cost a socket each and hold up nothing else.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from daemon.events.job_stage import JobStage
from daemon.logs import get_logger
from daemon.metrics import Metrics
from daemon.plc.handshake import Handshake
from daemon.plc.loop import LoopServer
from daemon.plc.modbus_map import BLOCK_SIZE, CONTROL_WORDS, HEARTBEAT_S

log = get_logger("linewatch.plc")

class ModbusServer(LoopServer):
    def __init__(self, host: str, port: int, jobs: Sequence[JobStage], metrics: Metrics, *, fresh_s: float,
                 buffer: int) -> None:
        super().__init__("plc:modbus")
        self._address = (host, port)
        self._metrics = metrics
        self.cameras = [stage.camera_id for stage in jobs]
        self.blocks: list[Handshake] = []
        for stage in jobs:
            block = self._block(stage, buffer, fresh_s)
            self.blocks.append(block)
            stage.listen(functools.partial(self.call, block.result))

    def _block(self, stage: JobStage, buffer: int, fresh_s: float) -> Handshake:
        lost = self._metrics.plc_results_lost

        def trigger(part_id: str) -> object:
            return stage.trigger("plc_modbus", part_id)

        def on_lost(reason: str) -> None:
            lost.labels("modbus", stage.camera_id, reason).inc()

        return Handshake(trigger, ready=lambda: stage.ready, jobs_open=lambda: stage.open_jobs, buffer=buffer,
                         fresh_s=fresh_s, on_lost=on_lost)

    def start(self) -> None:
        """Serve; returns once listening. PlcServerError when the address cannot be served."""
        super().start()
        log.info("modbus_listening", address=f"{self._address[0]}:{self._address[1]}", cameras=self.cameras,
                 block_size=BLOCK_SIZE)

    def _refusal(self, error: str) -> str:
        return (f"cannot serve Modbus TCP on {self._address[0]}:{self._address[1]}: {error}; set "
                "LINEWATCH_MODBUS__PORT to a free port")

    async def _serve(self) -> None:
        data: list[SimData] = []
        for index in range(len(self.blocks)):
            base = index * BLOCK_SIZE
            data.append(SimData(base, count=CONTROL_WORDS, values=0, datatype=DataType.REGISTERS))
            data.append(SimData(base + CONTROL_WORDS, count=BLOCK_SIZE - CONTROL_WORDS, values=0,
                                datatype=DataType.REGISTERS, readonly=True))
        device = SimDevice(0, simdata=data, action=self._access)
        server = ModbusTcpServer(device, address=self._address, trace_connect=self._connection)
        await server.serve_forever(background=True)
        self._listening.set()
        beat = asyncio.create_task(self._heartbeat())
        await self._closing.wait()
        beat.cancel()
        await server.shutdown()  # type: ignore[no-untyped-call]

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            for block in self.blocks:
                block.tick()

    def _connection(self, connected: bool) -> None:
        self._metrics.plc_clients.labels("modbus").inc(1 if connected else -1)

    async def _access(self, function_code: int, start_address: int, address: int, count: int,
                      registers: list[int], values: list[int] | list[bool] | None) -> ExcCodes | None:
        """pymodbus' hook, before each read or write: the PLC's writes go through the handshake, and every request
        sees the blocks as they are now."""
        if values is not None:  # one write per block, whole: a PLC writes PART_ID and Trigger in one request
            words = [int(value) for value in values]
            position = 0
            while position < len(words):
                where = address + position
                take = min(len(words) - position, BLOCK_SIZE - where % BLOCK_SIZE)
                self.blocks[where // BLOCK_SIZE].write(where % BLOCK_SIZE, words[position:position + take])
                position += take
        else:
            for block in self.blocks:
                block.refresh()
        for index, block in enumerate(self.blocks):
            offset = index * BLOCK_SIZE - start_address
            registers[offset:offset + BLOCK_SIZE] = block.registers
        return None
