#!/usr/bin/env bash
# Quick start: the daemon on the synthetic production line, printing the defect events it publishes.
# Needs only Python: without LINEWATCH_MQTT__URL an embedded broker is started on loopback.
# Usage: scripts/demo.sh [--seconds N]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh
export YOLO_OFFLINE=1
exec .venv/bin/linewatch demo "$@"
