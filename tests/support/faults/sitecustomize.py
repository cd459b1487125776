"""Fault injection for exit-code tests: a bug cannot be produced on demand, so one is planted.

Put this folder on PYTHONPATH and name a fault in LW_TEST_FAULT; Python imports `sitecustomize` at
start-up, before the daemon runs, and the named method of the real class is replaced by one that raises.
Everything else in the process is the real daemon. Without the variable this module does nothing.
"""

from __future__ import annotations

import os

_FAULT = os.environ.get("LW_TEST_FAULT", "")


def _raise(message: str):  # type: ignore[no-untyped-def]
    def planted(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError(message)

    return planted


if _FAULT == "publisher":
    from daemon.publish.mqtt import MqttPublisher

    MqttPublisher._fill_inflight = _raise("planted bug in the publisher")  # type: ignore[method-assign]
elif _FAULT == "capture":
    from daemon.sources.synthetic import SyntheticSource

    SyntheticSource.read = _raise("planted bug in a source")  # type: ignore[method-assign]
elif _FAULT == "detector_hang":
    import threading

    from daemon.detect.model import Detector

    def _hang(*_args, **_kwargs):  # type: ignore[no-untyped-def]
        threading.Event().wait()  # an inference that never returns, as a driver or a runtime stuck in C would

    Detector.infer_inputs = _hang  # type: ignore[method-assign]
