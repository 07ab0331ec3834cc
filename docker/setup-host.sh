#!/usr/bin/env bash
# Prepare this machine for the testbed: a docker engine, compose (v2 plugin or v1), debootstrap,
# and Python's venv. Installs from the distribution only what is missing; starts the engine when
# it is not running. Runs as root, or through sudo.
set -euo pipefail
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
if ! docker compose version >/dev/null 2>&1 && ! command -v docker-compose >/dev/null; then
    missing+=(docker-compose)
fi
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
command -v openssl >/dev/null || missing+=(openssl)   # the testbed's CA and server certificates
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    $SUDO apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        $SUDO systemctl start docker
    else
        # A pid file left by an engine that was killed would stop the new one.
        pid=$(cat /var/run/docker.pid 2>/dev/null || true)
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then $SUDO rm -f /var/run/docker.pid; fi
        echo "setup: starting dockerd in the background (log /var/log/dockerd.log)"
        $SUDO sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
    fi
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { echo "setup: the docker engine did not start; see /var/log/dockerd.log" >&2; exit 1; }
fi
echo "setup: docker $(docker info -f '{{.ServerVersion}}' 2>/dev/null) ready"
