#!/usr/bin/env bash
# The whole test suite, against real services. Installs what is missing first:
#  - Debian: mosquitto, GStreamer's RTSP server (python3-gi + gir1.2-gst-rtsp-server-1.0) and plugins,
#    systemd-analyze, buildah + debootstrap (the image check), docker-compose (compose validation),
#    Aravis (gir1.2-aravis-0.8, and aravis-tools for its fake GigE Vision camera) with what PyGObject builds on
#  - Python: .venv with the pinned set (torch 2.14.1 / torchvision 0.29.1 on x86_64), the test tools and the
#    genicam extra (PyGObject)
# Extra arguments go to pytest, e.g. scripts/test.sh tests/settings -x
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
# GenICam cameras: Aravis' library and fake camera; PyGObject (linewatch[genicam]) builds against girepository
command -v arv-fake-gv-camera-0.8 >/dev/null || need_apt+=(aravis-tools)
[[ -f /usr/lib/$(uname -m)-linux-gnu/girepository-1.0/Aravis-0.8.typelib ]] || need_apt+=(gir1.2-aravis-0.8)
pkg-config --exists gobject-introspection-1.0 cairo 2>/dev/null || need_apt+=(pkg-config libgirepository1.0-dev libcairo2-dev)
if ((${#need_apt[@]})); then
    echo "installing Debian packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

VENV_EXTRAS=test,genicam scripts/setup-venv.sh
export YOLO_OFFLINE=1
echo "disk: $(df -h --output=avail,size / | tail -1 | xargs) free/size on /; buildah storage: $(du -sh /var/lib/containers 2>/dev/null | cut -f1 || echo none)"
exec .venv/bin/python -m pytest "$@"
