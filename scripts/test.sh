#!/usr/bin/env bash
# The whole test suite, against real services. Installs what is missing first:
#  - Debian: mosquitto, GStreamer's RTSP server (python3-gi + gir1.2-gst-rtsp-server-1.0) and plugins,
#    systemd-analyze, buildah + debootstrap (the image check), docker-compose (compose validation)
#  - Python: .venv with the pinned set (torch 2.14.1 / torchvision 0.29.1 on x86_64) and the test tools
# Extra arguments go to pytest, e.g. scripts/test.sh tests/test_settings.py -x
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto >/dev/null || [[ -x /usr/sbin/mosquitto ]] || need_apt+=(mosquitto mosquitto-clients)
if ! /usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer" \
        >/dev/null 2>&1; then
    need_apt+=(python3-gi gir1.2-gst-rtsp-server-1.0)
fi
command -v gst-inspect-1.0 >/dev/null || need_apt+=(gstreamer1.0-tools)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)  # verifies systemd/linewatch.service
command -v promtool >/dev/null || need_apt+=(prometheus)  # promtool checks a live /metrics scrape
# scripts/image-check.sh (tests/test_image.py) builds and runs the container image without a Docker engine
command -v buildah >/dev/null || need_apt+=(buildah)
command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] || need_apt+=(debootstrap)
# tests/test_docker_files.py validates docker/compose.yml with a compose CLI (no engine needed)
command -v docker-compose >/dev/null || need_apt+=(docker-compose)
if ! gst-inspect-1.0 x264enc >/dev/null 2>&1 || ! gst-inspect-1.0 rtph264pay >/dev/null 2>&1; then
    need_apt+=(gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
               gstreamer1.0-plugins-ugly)
fi
if ((${#need_apt[@]})); then
    echo "installing Debian packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

LINEWATCH_EXTRAS=test scripts/setup-venv.sh
export YOLO_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
