#!/usr/bin/env bash
# Proof, without a Docker engine or a registry, that docker/Dockerfile builds and that the image runs:
#   a. base: `debootstrap --variant=minbase bookworm` + python3, imported into buildah storage
#      (localhost/linewatch-base:bookworm; kept, so a rerun skips it)
#   b. build: the CPU variant of docker/Dockerfile on that base (buildah, chroot isolation, vfs storage)
#   c. run: the image's own ENTRYPOINT/Env as its non-root user on a read-only root with a tmpfs /tmp:
#      --version, check-config, doctor, and a 20 s `run` on the synthetic line against a host mosquitto
#      (at least one defect event must arrive)
#   d. consistency: one finite synthetic stream through the image and through the host's .venv; both must
#      publish the same defect events (frame_seq, labels, boxes within 1 px, confidences within 0.01)
#   e. update: events left in an outbox dir by one container (broker unreachable, then SIGTERM) are
#      drained by a new container on the same dir, with gapless seq and none lost
#   f. size: uncompressed, and as a gzip-compressed docker-archive tar
# Prints a summary; exits non-zero on any failure. Needs root, buildah, debootstrap, mosquitto, and .venv
# (scripts/setup-venv.sh). The image runs under chroot (see "running the image" for why not podman).
#
# Environment:
#   IMAGE_CHECK_REBUILD=1     rebuild the image even when its inputs are unchanged
#   IMAGE_CHECK_REBASE=1      rebuild the debootstrap base too
#   IMAGE_CHECK_SKIP_SIZE=1   skip f (gzip of a multi-GB tar takes minutes)
#   IMAGE_CHECK_NEED_GB=N     free space (GiB) the build needs under buildah's storage (default 36, measured 33)
#   IMAGE_CHECK_FRAMES=N      frames of the finite stream in d (default 150)
#   PIP_FIND_LINKS / PIP_EXTRA_INDEX_URL: local wheel stores; each local path named in them is mounted
#      read-only into the build (this project's machines keep the torch wheels on local disk)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
started=$(date +%s)

BUILDAH=(buildah --storage-driver vfs)
BASE_IMAGE=localhost/linewatch-base:bookworm
IMAGE=localhost/linewatch:cpu
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
FRAMES=${IMAGE_CHECK_FRAMES:-150}
PY=$ROOT/.venv/bin/python

summary=()
note() { printf '[image-check %4ss] %s\n' "$(($(date +%s) - started))" "$*"; }
ok() { summary+=("PASS  $*"); note "PASS $*"; }
skip() { summary+=("SKIP  $*"); note "SKIP $*"; }
fail() {
    summary+=("FAIL  $*")
    note "FAIL $*"
    print_summary
    exit 1
}
print_summary() {
    echo
    echo "== image check summary ($(($(date +%s) - started)) s) =="
    printf '  %s\n' "${summary[@]}"
}

[[ $EUID -eq 0 ]] || { echo "image-check: needs root (buildah vfs storage, debootstrap, chroot)" >&2; exit 2; }
for tool in buildah debootstrap mosquitto; do
    command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || {
        echo "image-check: $tool is missing (apt-get install buildah debootstrap mosquitto)" >&2; exit 2; }
done
[[ -x $PY ]] || { echo "image-check: .venv is missing; run scripts/setup-venv.sh" >&2; exit 2; }
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

WORK=$(mktemp -d /var/tmp/linewatch-image-check.XXXXXX)
pids=()
host_mounts=()
cleanup() {
    local pid c m
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    for pid in "${host_mounts[@]}"; do umount "$pid" 2>/dev/null || true; done
    if [[ -n ${RUN_CTR:-} ]]; then
        "${BUILDAH[@]}" umount "$RUN_CTR" >/dev/null 2>&1 || true
        "${BUILDAH[@]}" rm "$RUN_CTR" >/dev/null 2>&1 || true
    fi
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Bounded polling: wait_for SECONDS DESCRIPTION COMMAND...
wait_for() {
    local deadline=$(($(date +%s) + $1)) what=$2
    shift 2
    until "$@" >/dev/null 2>&1; do
        (($(date +%s) < deadline)) || return 1
        sleep 0.2
    done
}
port_open() { "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 1)" "$1"; }

###################################################################################################### a. base
step_started=$(date +%s)
if [[ -n ${IMAGE_CHECK_REBASE:-} ]]; then "${BUILDAH[@]}" rmi -f "$BASE_IMAGE" >/dev/null 2>&1 || true; fi
if "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
    ok "a. base $BASE_IMAGE (cached)"
else
    note "a. debootstrap bookworm (minbase + python3) from $DEBIAN_MIRROR"
    rootfs=$WORK/rootfs
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" \
        "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; fail "a. debootstrap"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
        "$rootfs"/usr/share/man/*
    ctr=$("${BUILDAH[@]}" from scratch)
    mnt=$("${BUILDAH[@]}" mount "$ctr")
    tar -C "$rootfs" -cf - . | tar -C "$mnt" -xf -
    "${BUILDAH[@]}" umount "$ctr" >/dev/null
    "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 --cmd /bin/bash --os linux --arch amd64 \
        --label org.opencontainers.image.description="debootstrap minbase bookworm + python3 (image check)" "$ctr"
    "${BUILDAH[@]}" commit --quiet --rm "$ctr" "$BASE_IMAGE" >/dev/null
    rm -rf "$rootfs"
    ok "a. base $BASE_IMAGE built in $(($(date +%s) - step_started)) s"
fi

##################################################################################################### b. build
VERSION=$("$PY" -c 'import daemon; print(daemon.__version__)')
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
git diff --quiet HEAD -- daemon pyproject.toml constraints.txt docker models 2>/dev/null || REVISION="$REVISION-dirty"
MODEL_SHA256=$(sha256sum models/linewatch-defects.pt | cut -d' ' -f1)
# The build's inputs (what .dockerignore lets through, and the Dockerfile): unchanged inputs reuse the image.
INPUTS=$( (echo "format docker"; sha256sum docker/Dockerfile .dockerignore pyproject.toml constraints.txt README.md \
    models/linewatch-defects.pt models/linewatch-defects.onnx
    find daemon -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z | xargs -0 sha256sum) |
    sha256sum | cut -c1-16)
build_args=(--build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "VERSION=$VERSION" --build-arg "REVISION=$REVISION"
            --build-arg "MODEL_SHA256=$MODEL_SHA256")
volumes=()
# pip settings of this machine (local wheel stores, CA bundle of an inspecting proxy) go into the build.
pip_links=${PIP_FIND_LINKS:-$(pip config get global.find-links 2>/dev/null || true)}
pip_extra=${PIP_EXTRA_INDEX_URL:-$(pip config get global.extra-index-url 2>/dev/null || true)}
for spec in $pip_links $pip_extra; do
    path=${spec#file://}
    [[ $path == /* ]] || continue
    [[ $path == */simple ]] && path=${path%/simple}  # a file:// index links to ../files beside it
    [[ -d $path ]] && volumes+=(-v "$path:$path:ro")
done
[[ -n $pip_links ]] && build_args+=(--build-arg "PIP_FIND_LINKS=$pip_links")
[[ -n $pip_extra ]] && build_args+=(--build-arg "PIP_EXTRA_INDEX_URL=$pip_extra")
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    volumes+=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
    build_args+=(--build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt)
fi
# buildah's --format templates have no json function: read the whole inspect document with python.
image_json() { "${BUILDAH[@]}" inspect --type image "$IMAGE" 2>/dev/null; }
jq_py() { "$PY" -c "import json,sys; d=json.load(sys.stdin); $1"; }
have=$(image_json | jq_py 'print(d["OCIv1"]["config"].get("Labels", {}).get("io.linewatch.check-inputs", ""))' \
    2>/dev/null || true)
step_started=$(date +%s)
if [[ -z ${IMAGE_CHECK_REBUILD:-} && $have == "$INPUTS" ]]; then
    ok "b. image $IMAGE (inputs $INPUTS unchanged, not rebuilt)"
else
    # The build needs room for the builder's and the runtime's root filesystems plus the committed layer
    # (vfs copies each whole); the image it replaces and containers left by a killed run are dropped first
    # (CI machines keep buildah's storage between runs: the old image alone is 7 GB).
    need_gb=${IMAGE_CHECK_NEED_GB:-36}  # measured: 33 GiB at the peak (the commit)
    [[ $need_gb =~ ^[0-9]{1,6}$ ]] || fail "b. IMAGE_CHECK_NEED_GB must be a whole number of GiB, not '$need_gb'"
    "${BUILDAH[@]}" rm --all >/dev/null 2>&1 || true
    "${BUILDAH[@]}" rmi -f "$IMAGE" >/dev/null 2>&1 || true
    "${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
    storage=$("${BUILDAH[@]}" info --format '{{.store.GraphRoot}}' 2>/dev/null || echo /var/lib/containers)
    mkdir -p "$storage"
    free_gb=$(($(df --output=avail -k "$storage" | tail -1) / 1048576))
    ((free_gb >= need_gb)) || fail "b. only $free_gb GiB free under $storage; the build needs about $need_gb GiB (IMAGE_CHECK_NEED_GB)"
    note "b. buildah bud docker/Dockerfile -> $IMAGE ($free_gb GiB free under $storage; log: build.log)"
    if ! "${BUILDAH[@]}" bud --isolation chroot --format docker --layers=false --jobs 1 -f docker/Dockerfile -t "$IMAGE" \
            --label "io.linewatch.check-inputs=$INPUTS" "${build_args[@]}" "${volumes[@]}" . \
            >"$WORK/build.log" 2>&1; then
        tail -30 "$WORK/build.log"
        fail "b. build"
    fi
    cp "$WORK/build.log" /var/tmp/linewatch-image-build.log
    ok "b. built $IMAGE in $(($(date +%s) - step_started)) s (log /var/tmp/linewatch-image-build.log)"
fi
# Whatever is left from earlier builds of the same tag only eats disk.
"${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true

# What the image says about itself.
image_json >"$WORK/inspect.json"
"$PY" - "$WORK/inspect.json" "$VERSION" "$MODEL_SHA256" >"$WORK/inspect.txt" 2>&1 <<'EOF' ||
import json, sys
d, version, sha = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3]
config, docker = d["OCIv1"]["config"], d["Docker"]["config"]
labels = config.get("Labels", {})
assert config.get("User") == "10001:10001", f"user {config.get('User')!r}"
assert config.get("Entrypoint") == ["linewatch"] and config.get("Cmd") == ["run"], (config.get("Entrypoint"), config.get("Cmd"))
assert "/var/lib/linewatch" in config.get("Volumes", {}), config.get("Volumes")
assert "9464/tcp" in config.get("ExposedPorts", {}), config.get("ExposedPorts")
assert labels.get("org.opencontainers.image.version") == version, labels
assert labels.get("org.opencontainers.image.revision") not in (None, "", "unknown"), labels
assert labels.get("io.linewatch.model.sha256") == sha, labels
hc = (docker.get("Healthcheck") or {}).get("Test") or []
assert hc and "/healthz" in " ".join(hc), f"HEALTHCHECK {hc}"
print(f"user {config['User']}, entrypoint {config['Entrypoint']} {config['Cmd']}, HEALTHCHECK, "
      f"version {version}, revision {labels['org.opencontainers.image.revision'][:12]}, model {sha[:12]}")
EOF
    { cat "$WORK/inspect.txt"; fail "b. the image's config"; }
ok "b. $(cat "$WORK/inspect.txt")"

############################################################################################ running the image
# img_run NAME OUTBOX_DIR [ENV=VALUE...] -- ARGS...: runs the image's entrypoint as its user on a read-only
# root, tmpfs /tmp, host network, OUTBOX_DIR as the volume; stdout+stderr to $WORK/NAME.log. Foreground.
# img_start: the same in the background; its pid in $last_pid (SIGTERM to it reaches the daemon).
# podman would be the obvious runner, but here it cannot start a container (crun: setrlimit RLIMIT_NOFILE:
# EPERM inside this machine's sandbox), and with vfs storage each `podman run` copies the whole multi-GB
# rootfs. So: one working container, mounted once, entered with chroot for every run.
RUN_CTR=$("${BUILDAH[@]}" from --pull-never "$IMAGE")
RUN_MNT=$("${BUILDAH[@]}" mount "$RUN_CTR")
mapfile -t img_env < <(jq_py 'print("\n".join(d["OCIv1"]["config"]["Env"]))' <"$WORK/inspect.json")
img_workdir=$(jq_py 'print(d["OCIv1"]["config"].get("WorkingDir") or "/")' <"$WORK/inspect.json")
mapfile -t img_entrypoint < <(jq_py 'print("\n".join(d["OCIv1"]["config"]["Entrypoint"]))' <"$WORK/inspect.json")
mapfile -t img_user < <(jq_py 'print(d["OCIv1"]["config"]["User"])' <"$WORK/inspect.json")
# A read-only view of the root: a read-only bind mount of the image's rootfs, then a tmpfs /tmp, the
# volume, /proc /dev /sys. Each run has its own mount namespace (unshare -m), so its mounts die with it.
ROOTRO=$WORK/rootro
mkdir -p "$ROOTRO"

# img_cmd NAME OUTBOX [ENV=V...] -- ARGS...: sets cmd=(...) that runs the image's ENTRYPOINT with ARGS as
# its user (`buildah inspect`: User, Env, WorkingDir), on a read-only root with a tmpfs /tmp, the host's
# network and OUTBOX as the volume. With EXEC=1, ARGS is the whole command instead (e.g. HEALTHCHECK).
img_cmd() {
    local name=$1 outbox=$2
    shift 2
    local envs=()
    while [[ $1 != -- ]]; do envs+=("$1"); shift; done
    shift
    local argv=("$@")
    [[ -n ${EXEC:-} ]] || argv=("${img_entrypoint[@]}" "$@")
    local inner
    # TMP_HOST: a tmpfs mounted on the host to be /tmp, so that what the run wrote there can be listed.
    inner=$(cat <<EOS
set -e
mount --bind "$RUN_MNT" "$ROOTRO"
mount -t proc proc "$ROOTRO/proc"
mount --rbind /dev "$ROOTRO/dev"
mount --rbind /sys "$ROOTRO/sys"
if [[ -n "${TMP_HOST:-}" ]]; then mount --bind "${TMP_HOST:-}" "$ROOTRO/tmp"; else mount -t tmpfs -o mode=1777,size=512m tmpfs "$ROOTRO/tmp"; fi
mount --bind "$outbox" "$ROOTRO/var/lib/linewatch"
mount --bind /etc/resolv.conf "$ROOTRO/etc/resolv.conf" 2>/dev/null || true
mount -o remount,bind,ro "$ROOTRO"
exec chroot --userspec="$img_user" "$ROOTRO" /usr/bin/env -i "\$@"
EOS
)
    cmd=(unshare -m --propagation private bash -c "$inner" bash "${img_env[@]}" "${envs[@]}"
         /bin/sh -c "cd '$img_workdir' && exec \"\$@\"" sh "${argv[@]}")
}
img_run() {
    local name=$1
    img_cmd "$@"
    "${cmd[@]}" >"$WORK/$name.log" 2>&1
}
img_start() {
    local name=$1
    img_cmd "$@"
    "${cmd[@]}" >"$WORK/$name.log" 2>&1 &
    last_pid=$!
    pids+=("$last_pid")
}
# Stops a backgrounded run with SIGTERM and returns its exit code. Every link of the chain (unshare, bash,
# chroot, env, sh) execs the next, so the background pid is the daemon itself.
img_stop() {
    local pid=$2 rc=0
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" || rc=$?
    return "$rc"
}

# A host mosquitto on a free loopback port; its own config, no persistence.
MQTT_PORT=$(free_port)
cat >"$WORK/mosquitto.conf" <<EOF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
EOF
"$MOSQUITTO" -c "$WORK/mosquitto.conf" >"$WORK/mosquitto.log" 2>&1 &
pids+=($!)
wait_for 10 mosquitto port_open "$MQTT_PORT" || fail "mosquitto did not listen on $MQTT_PORT"

# A subscriber: every message under PREFIX/# as one JSON line {topic, payload}; "subscribed" once ready.
cat >"$WORK/sub.py" <<'EOF'
import json, sys
import paho.mqtt.client as mqtt
port, prefix, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
f = open(out, "a", buffering=1)
def on_connect(client, userdata, flags, reason, props):
    client.subscribe(prefix + "/#", qos=1)
def on_subscribe(client, userdata, mid, reasons, props):
    print("subscribed", flush=True)
def on_message(client, userdata, msg):
    f.write(json.dumps({"topic": msg.topic, "payload": msg.payload.decode()}) + "\n")
c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
c.on_connect, c.on_subscribe, c.on_message = on_connect, on_subscribe, on_message
c.connect("127.0.0.1", port)
c.loop_forever()
EOF
subscribe() {  # PREFIX -> starts a subscriber writing $WORK/PREFIX.jsonl; waits until it has subscribed
    "$PY" "$WORK/sub.py" "$MQTT_PORT" "$1" "$WORK/$1.jsonl" >"$WORK/sub-$1.log" 2>&1 &
    pids+=($!)
    touch "$WORK/$1.jsonl"
    wait_for 20 "subscriber $1" grep -q subscribed "$WORK/sub-$1.log" || fail "subscriber for $1 did not subscribe"
}
count_defects() { grep -c '/defects"' "$WORK/$1.jsonl" || true; }
log_has() { grep -q "$2" "$WORK/$1.log"; }

OUTBOX_RUN=$WORK/outbox-run
mkdir -p "$OUTBOX_RUN"
chown 10001:10001 "$OUTBOX_RUN"
BROKER="LINEWATCH_MQTT__URL=mqtt://127.0.0.1:$MQTT_PORT"
THREADS=LINEWATCH_MODEL__THREADS=1  # the other cores belong to whoever else runs here

######################################################################################################## c. run
img_run version "$OUTBOX_RUN" -- --version || { cat "$WORK/version.log"; fail "c. linewatch --version"; }
ok "c. --version: $(tr -d '\n' <"$WORK/version.log")"

img_run listvars "$OUTBOX_RUN" -- check-config --list || true
has_http=0
grep -q LINEWATCH_HTTP__PORT "$WORK/listvars.log" && has_http=1
# Where the event stage has modes, every run here asks for one event per inspected frame (schema
# linewatch.frame_defects/1, with every detection) instead of one per physical defect: d compares payloads frame
# by frame, and c and e then do not depend on the tracker confirming a defect within their short runs on
# a machine whose load varies.
per_frame=()
grep -q LINEWATCH_EVENTS__MODE "$WORK/listvars.log" && per_frame=(LINEWATCH_EVENTS__MODE=frames)
HTTP_PORT=$(free_port)
http_env=()
((has_http)) && http_env=("LINEWATCH_HTTP__PORT=$HTTP_PORT" LINEWATCH_HTTP__HOST=127.0.0.1)

img_run check-config "$OUTBOX_RUN" LINEWATCH_CAMERA__URL=synthetic://line "$BROKER" "${http_env[@]}" -- check-config ||
    { cat "$WORK/check-config.log"; fail "c. check-config"; }
"$PY" -c "import json,sys; json.load(open(sys.argv[1]))" "$WORK/check-config.log" ||
    fail "c. check-config did not print JSON"
ok "c. check-config (exit 0, JSON)"

img_run help "$OUTBOX_RUN" -- --help || true
if grep -q doctor "$WORK/help.log"; then
    rc=0
    # A GigE Vision camera on the host's loopback (Aravis' fake one, where aravis-tools is installed): the image's
    # Aravis must find it.
    fake_pid=""
    if command -v arv-fake-gv-camera-0.8 >/dev/null; then
        arv-fake-gv-camera-0.8 -i 127.0.0.1 -s IMGCHECK >/dev/null 2>&1 &
        fake_pid=$!
        "$PY" -c 'import sys, time; from tests.support.genicam import answers
end = time.monotonic() + 10
while not answers() and time.monotonic() < end: pass
sys.exit(0 if answers() else 1)' || fail "c. the fake GigE Vision camera did not start"
    fi
    img_run doctor "$OUTBOX_RUN" LINEWATCH_CAMERA__URL=synthetic://line "$BROKER" "${http_env[@]}" -- doctor || rc=$?
    [[ -n $fake_pid ]] && kill "$fake_pid" 2>/dev/null
    [[ $rc -eq 0 ]] || { cat "$WORK/doctor.log"; fail "c. doctor exited $rc"; }
    genicam=$(grep -E '^ok +genicam ' "$WORK/doctor.log" || true)
    [[ $genicam == *"Aravis 0.8"* ]] || { cat "$WORK/doctor.log"; fail "c. doctor: the image has no Aravis: $genicam"; }
    if [[ -n $fake_pid && $genicam != *"serial IMGCHECK at 127.0.0.1"* ]]; then
        fail "c. doctor: the image's Aravis did not see the camera on loopback: $genicam"
    fi
    ok "c. doctor (exit 0; ${genicam#ok }) "
else
    skip "c. doctor: this linewatch has no 'doctor' command yet"
fi

subscribe run
# /tmp of the main run: a tmpfs on the host, so that its contents can be listed afterwards.
mkdir -p "$WORK/tmp-run"
mount -t tmpfs -o mode=1777,size=512m tmpfs "$WORK/tmp-run"
host_mounts+=("$WORK/tmp-run")
TMP_HOST=$WORK/tmp-run img_start run "$OUTBOX_RUN" "LINEWATCH_CAMERA__URL=synthetic://line?fps=10" "$BROKER" \
    LINEWATCH_MQTT__TOPIC_PREFIX=run "$THREADS" "${http_env[@]}" "${per_frame[@]}" -- run
run_pid=$last_pid
if ((has_http)); then
    healthz() { "$PY" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" \
        "http://127.0.0.1:$HTTP_PORT/healthz"; }
    wait_for 120 healthz healthz || { tail -20 "$WORK/run.log"; fail "c. /healthz never answered 200"; }
    # The image's own HEALTHCHECK command, run in the image beside the daemon (same network, same Env).
    mapfile -t hc_argv < <(jq_py 'print("\n".join(d["Docker"]["config"]["Healthcheck"]["Test"][1:]))' \
        <"$WORK/inspect.json")
    EXEC=1 img_run healthcheck "$OUTBOX_RUN" "LINEWATCH_CAMERA__URL=synthetic://line?fps=10" "$BROKER" \
        LINEWATCH_MQTT__TOPIC_PREFIX=run "$THREADS" "${http_env[@]}" "${per_frame[@]}" -- "${hc_argv[@]}" ||
        { cat "$WORK/healthcheck.log"; fail "c. the image's HEALTHCHECK command failed on a healthy daemon"; }
    ok "c. /healthz 200, and the image's HEALTHCHECK command passes"
else
    skip "c. /healthz: this linewatch has no HTTP server yet"
fi
run_t0=$(date +%s)
# 20 s of running after it is ready (or after start, without the HTTP server).
wait_for 180 "daemon ready" log_has run daemon_ready || { tail -20 "$WORK/run.log"; fail "c. daemon never ready"; }
wait_for 25 "20 s" test "$(($(date +%s) - run_t0))" -ge 20 || true
rc=0
img_stop run "$run_pid" || rc=$?
[[ $rc -eq 0 ]] || { tail -20 "$WORK/run.log"; fail "c. run exited $rc after SIGTERM (expected 0)"; }
n=$(count_defects run)
((n >= 1)) || { tail -20 "$WORK/run.log"; fail "c. no defect event arrived in 20 s"; }
# Nothing may write outside /tmp and the volume: a read-only root makes such a write an error in the log.
if grep -qiE 'read-only file system|errno 30' "$WORK/run.log"; then
    grep -iE 'read-only file system|errno 30' "$WORK/run.log" | head -5
    fail "c. something tried to write to the read-only root"
fi
in_tmp=$(cd "$WORK/tmp-run" && find . -mindepth 1 -maxdepth 1 -printf '%f ' | sed 's/ $//')
in_volume=$(cd "$OUTBOX_RUN" && find . -mindepth 1 -maxdepth 1 -printf '%f ' | sed 's/ $//')
ok "c. 20 s run on synthetic://line?fps=10: $n defect events arrived, exit 0 on SIGTERM; nothing tried to write to the read-only root; written: /tmp: [$in_tmp], volume: [$in_volume]"

################################################################################################ d. consistency
STREAM="synthetic://line?frames=$FRAMES&realtime=false&seed=7001"
subscribe img
subscribe host
OUTBOX_IMG=$WORK/outbox-img
OUTBOX_HOST=$WORK/outbox-host
mkdir -p "$OUTBOX_IMG" "$OUTBOX_HOST"
chown 10001:10001 "$OUTBOX_IMG"
step_started=$(date +%s)
no_http=()
((has_http)) && no_http=(LINEWATCH_HTTP__ENABLED=false)
rc=0
img_run img "$OUTBOX_IMG" "LINEWATCH_CAMERA__URL=$STREAM" "$BROKER" LINEWATCH_MQTT__TOPIC_PREFIX=img \
    "$THREADS" "${no_http[@]}" "${per_frame[@]}" -- run || rc=$?
[[ $rc -eq 0 ]] || { tail -20 "$WORK/img.log"; fail "d. image run of $STREAM exited $rc (expected 0 at end)"; }
img_s=$(($(date +%s) - step_started))
host_env=(env -u LINEWATCH_ENV_FILE YOLO_OFFLINE=1 "LINEWATCH_CAMERA__URL=$STREAM" "$BROKER"
          LINEWATCH_MQTT__TOPIC_PREFIX=host "$THREADS" "LINEWATCH_OUTBOX__DIR=$OUTBOX_HOST"
          LINEWATCH_MODEL__PATH=models/linewatch-defects.pt LINEWATCH_LOG__FORMAT=json)
host_env+=("${no_http[@]}" "${per_frame[@]}")
step_started=$(date +%s)
rc=0
"${host_env[@]}" .venv/bin/linewatch run >"$WORK/host.log" 2>&1 || rc=$?
[[ $rc -eq 0 ]] || { tail -20 "$WORK/host.log"; fail "d. .venv run of $STREAM exited $rc"; }
host_s=$(($(date +%s) - step_started))
# Everything each committed must have arrived (the daemon exits 0 only after its drain; the subscriber may
# trail the PUBACK by a moment).
committed() { "$PY" -c 'import json,sys
for l in open(sys.argv[1]):
    try: r = json.loads(l)
    except ValueError: continue
    if r.get("event") == "shutdown_complete": print(r["events"])' "$WORK/$1.log" | tail -1; }
n_img=$(committed img)
n_host=$(committed host)
[[ -n $n_img && -n $n_host ]] || fail "d. no shutdown_complete line"
wait_for 20 "img events" test "$(count_defects img)" -ge "$n_img" || fail "d. image: $(count_defects img)/$n_img arrived"
wait_for 20 "host events" test "$(count_defects host)" -ge "$n_host" || fail "d. host: $(count_defects host)/$n_host arrived"
"$PY" - "$WORK/img.jsonl" "$WORK/host.jsonl" >"$WORK/compare.txt" 2>&1 <<'EOF' || { cat "$WORK/compare.txt"; fail "d. the image and the host published different events"; }
import json, sys
def events(path):
    out = {}
    for line in open(path):
        m = json.loads(line)
        if m["topic"].endswith("/defects"):
            e = json.loads(m["payload"])
            out[e["frame_seq"]] = e
    return out
img, host = events(sys.argv[1]), events(sys.argv[2])
problems = []
if sorted(img) != sorted(host):
    problems.append(f"frames differ: only image {sorted(set(img) - set(host))[:10]}, "
                    f"only host {sorted(set(host) - set(img))[:10]}")
worst_px = worst_conf = 0.0
for f in sorted(set(img) & set(host)):
    a, b = img[f]["detections"], host[f]["detections"]
    key = lambda d: (d["label"], d["bbox"]["x1"], d["bbox"]["y1"])
    a, b = sorted(a, key=key), sorted(b, key=key)
    if [d["label"] for d in a] != [d["label"] for d in b]:
        problems.append(f"frame {f}: labels {[d['label'] for d in a]} vs {[d['label'] for d in b]}")
        continue
    for da, db in zip(a, b):
        px = max(abs(da["bbox"][k] - db["bbox"][k]) for k in ("x1", "y1", "x2", "y2"))
        conf = abs(da["confidence"] - db["confidence"])
        worst_px, worst_conf = max(worst_px, px), max(worst_conf, conf)
        if px > 1 or conf > 0.01:
            problems.append(f"frame {f} {da['label']}: box off by {px:.2f} px, confidence by {conf:.4f}")
if problems:
    print("\n".join(problems[:20]))
    sys.exit(1)
ndet = sum(len(e["detections"]) for e in img.values())
print(f"{len(img)} events, {ndet} detections; worst box difference {worst_px:.3f} px, "
      f"confidence {worst_conf:.5f}")
EOF
ok "d. $STREAM: image ($img_s s) and .venv ($host_s s) agree: $(cat "$WORK/compare.txt")"

##################################################################################################### e. update
OUTBOX_UPD=$WORK/outbox-update
mkdir -p "$OUTBOX_UPD"
chown 10001:10001 "$OUTBOX_UPD"
DEAD_PORT=$(free_port)  # nothing listens: the broker is down for the old container
subscribe upd
img_start old "$OUTBOX_UPD" "LINEWATCH_CAMERA__URL=synthetic://line?fps=10&seed=42" \
    "LINEWATCH_MQTT__URL=mqtt://127.0.0.1:$DEAD_PORT" LINEWATCH_MQTT__TOPIC_PREFIX=upd LINEWATCH_CAMERA__ID=cam1 \
    "$THREADS" LINEWATCH_PIPELINE__SHUTDOWN_TIMEOUT_S=3 "${http_env[@]}" "${per_frame[@]}" -- run
old_pid=$last_pid
enough_events() { (($(grep -c '"defect_event"' "$WORK/old.log" || true) >= 5)); }
wait_for 180 "5 events in the old container" enough_events || { tail -20 "$WORK/old.log"; fail "e. the old container stored no events"; }
rc=0
img_stop old "$old_pid" || rc=$?
[[ $rc -eq 0 ]] || { tail -20 "$WORK/old.log"; fail "e. old container exited $rc on SIGTERM"; }
# What the old one left: read from the outbox file itself.
# A copy, so that nothing here creates files (-shm, -wal) in the volume as root.
rm -rf "$WORK/outbox-copy"
cp -a "$OUTBOX_UPD" "$WORK/outbox-copy"
"$PY" - "$WORK/outbox-copy/outbox.sqlite3" >"$WORK/left.json" <<'EOF' || fail "e. cannot read the outbox the old container left"
import json, sqlite3, sys
con = sqlite3.connect(sys.argv[1])
# Defect events only (schema v2 keeps other kinds, e.g. snapshots, with their own seq, in the same table).
columns = {row[1] for row in con.execute("PRAGMA table_info(events)")}
where = "WHERE kind = 'defect'" if "kind" in columns else ""
rows = con.execute(f"SELECT seq, event_id FROM events {where} ORDER BY seq")
print(json.dumps([{"seq": s, "event_id": e} for s, e in rows]))
EOF
left=$("$PY" -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$WORK/left.json")
((left >= 1)) || fail "e. the old container left no events in the outbox (broker was down)"
img_start new "$OUTBOX_UPD" "LINEWATCH_CAMERA__URL=synthetic://line?fps=10&seed=43" "$BROKER" \
    LINEWATCH_MQTT__TOPIC_PREFIX=upd LINEWATCH_CAMERA__ID=cam1 "$THREADS" "${http_env[@]}" "${per_frame[@]}" -- run
new_pid=$last_pid
last_left=$("$PY" -c 'import json,sys; print(max(e["seq"] for e in json.load(open(sys.argv[1]))))' "$WORK/left.json")
# Drained and going on: the old events plus at least one new one (seq > last_left).
beyond() { "$PY" -c 'import json,sys
seqs = {json.loads(json.loads(l)["payload"])["seq"] for l in open(sys.argv[1]) if "/defects" in l}
sys.exit(0 if seqs and max(seqs) > int(sys.argv[2]) else 1)' "$WORK/upd.jsonl" "$last_left"; }
wait_for 180 "drain" beyond || { tail -20 "$WORK/new.log"; fail "e. the new container published nothing beyond seq $last_left"; }
rc=0
img_stop new "$new_pid" || rc=$?
[[ $rc -eq 0 ]] || { tail -20 "$WORK/new.log"; fail "e. new container exited $rc on SIGTERM"; }
"$PY" - "$WORK/left.json" "$WORK/upd.jsonl" >"$WORK/update.txt" 2>&1 <<'EOF' || { cat "$WORK/update.txt"; fail "e. events lost across the swap"; }
import json, sys
left = json.load(open(sys.argv[1]))
got = {}
for line in open(sys.argv[2]):
    m = json.loads(line)
    if m["topic"].endswith("/defects"):
        e = json.loads(m["payload"])
        got.setdefault(e["seq"], e["event_id"])
missing = [e for e in left if got.get(e["seq"]) != e["event_id"]]
seqs = sorted(got)
gaps = sorted(set(range(seqs[0], seqs[-1] + 1)) - set(seqs))
assert not missing, f"not delivered from the old outbox: {missing[:10]}"
assert seqs[0] == 1 and not gaps, f"seq gaps: first {seqs[0]}, missing {gaps[:10]}"
print(f"{len(left)} events left by the old container (seq {left[0]['seq']}-{left[-1]['seq']}) delivered by the "
      f"new one; seq 1-{seqs[-1]} gapless")
EOF
ok "e. update: $(cat "$WORK/update.txt")"

####################################################################################################### f. size
size_mb() { echo $(( ($1 + 524288) / 1048576 )); }
rootfs_bytes=$(du -sb "$RUN_MNT" | cut -f1)
if [[ -n ${IMAGE_CHECK_SKIP_SIZE:-} ]]; then
    ok "f. size: unpacked rootfs $(size_mb "$rootfs_bytes") MiB (tar + gzip skipped: IMAGE_CHECK_SKIP_SIZE)"
else
    step_started=$(date +%s)
    rm -f "$WORK/image.tar"
    "${BUILDAH[@]}" push --quiet "$IMAGE" "docker-archive:$WORK/image.tar:linewatch:cpu" >/dev/null 2>"$WORK/push.log" ||
        { cat "$WORK/push.log"; fail "f. buildah push docker-archive"; }
    tar_bytes=$(stat -c %s "$WORK/image.tar")
    gz_bytes=$(gzip -6 -c "$WORK/image.tar" | wc -c)
    rm -f "$WORK/image.tar"
    ok "f. size: unpacked rootfs $(size_mb "$rootfs_bytes") MiB; docker-archive tar $(size_mb "$tar_bytes") MiB, gzip -6 $(size_mb "$gz_bytes") MiB ($(($(date +%s) - step_started)) s to measure)"
fi

print_summary
