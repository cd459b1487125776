#!/usr/bin/env bash
# Installs linewatch as a systemd service: the steps of systemd/README.md, as one script.
#   /opt/linewatch/.venv                a virtualenv with linewatch from this checkout (a regular install, the
#                                       pinned dependency set of constraints.txt, the model in its share/)
#   /opt/linewatch/README.md, docs/, schemas/
#                                       the documentation the unit names (`systemctl help linewatch`) and the
#                                       payloads' JSON Schemas it links to
#   /etc/systemd/system/linewatch.service
#   /etc/linewatch/                     0755: the service's dynamic user reads a CA certificate put here
#   /etc/linewatch/linewatch.env        0600 root, from config/linewatch.env.example unless one is there
#                                       (systemd reads it as root, before it drops privileges)
# Then edit /etc/linewatch/linewatch.env and `systemctl enable --now linewatch`.
#
# Usage: sudo systemd/install.sh [--root DIR] [--python PYTHON] [--system-site-packages] [--pip-args "ARGS"]
#   --root DIR       install under DIR instead of / (a test does this in a scratch folder; the venv keeps DIR in
#                    its paths, so it runs from there only); systemctl is not called
#   --python PYTHON  the interpreter of the venv (default python3; 3.10 or later)
#   --system-site-packages
#                    let the venv see the system's packages: on a Jetson, JetPack's own torch and OpenCV
#                    (install those first, as docker/Dockerfile.jetson does)
#   --pip-args ARGS  extra arguments for pip (a local index, --no-deps for a test)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
root=/
python=python3
pip_args=()
venv_args=()
while (($#)); do
    case $1 in
        --root) root=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        --pip-args) read -r -a pip_args <<<"$2"; shift 2 ;;
        --system-site-packages) venv_args=(--system-site-packages); shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
root=${root%/}
venv=$root/opt/linewatch/.venv

echo "linewatch: virtualenv $venv"
install -d -m 0755 "$root/opt/linewatch"
"$python" -m venv "${venv_args[@]}" "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -c "$src/constraints.txt" "${pip_args[@]}" "$src"
"$venv/bin/linewatch" --version
echo "linewatch: documentation $root/opt/linewatch/{README.md,docs,schemas}"
install -m 0644 "$src/README.md" "$root/opt/linewatch/README.md"
for folder in docs schemas; do
    rm -rf "${root:?}/opt/linewatch/$folder"
    cp -R "$src/$folder" "$root/opt/linewatch/$folder"
    chmod -R u=rwX,go=rX "$root/opt/linewatch/$folder"
done

echo "linewatch: unit $root/etc/systemd/system/linewatch.service"
install -d -m 0755 "$root/etc/systemd/system"
install -m 0644 "$src/systemd/linewatch.service" "$root/etc/systemd/system/linewatch.service"

install -d -m 0755 "$root/etc/linewatch"
if [[ -e $root/etc/linewatch/linewatch.env ]]; then
    echo "linewatch: keeping $root/etc/linewatch/linewatch.env"
else
    install -m 0600 "$src/config/linewatch.env.example" "$root/etc/linewatch/linewatch.env"
    echo "linewatch: settings $root/etc/linewatch/linewatch.env (from config/linewatch.env.example): edit it"
fi

if [[ $root == "" ]] && command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
    echo "linewatch: next: edit /etc/linewatch/linewatch.env, then systemctl enable --now linewatch"
fi
