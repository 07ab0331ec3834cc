#!/usr/bin/env bash
# Make sure a Debian base image exists locally: IMAGE (e.g. debian:bookworm) for SUITE.
# Order: already present -> docker pull -> debootstrap from the mirror in this machine's apt
# configuration + docker import. Never rebuilds an image that exists.
set -euo pipefail
image=${1:?usage: base-image.sh IMAGE SUITE}
suite=${2:?usage: base-image.sh IMAGE SUITE}

if docker image inspect "$image" >/dev/null 2>&1; then
    echo "base image $image: present"
    exit 0
fi
if timeout 120 docker pull "$image" >/dev/null 2>&1; then
    echo "base image $image: pulled"
    exit 0
fi

# The first Debian archive URI in the machine's apt sources (deb822 .sources or one-line .list).
mirror=$(
    { cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}';
      cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
          awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}'; } |
    grep -v -- '-security' | grep -E '/debian/?$' | head -n 1
) || true
if [ -z "$mirror" ]; then
    echo "base image $image: cannot pull it and found no Debian mirror in /etc/apt/sources*;" \
         "add one or load the image with docker load" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "base image $image: debootstrap is not installed" >&2; exit 1; }

root=$(mktemp -d /var/tmp/rootfs-"$suite".XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "base image $image: pull failed, building it with debootstrap $suite from the apt mirror"
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -n 20 "$root.log" >&2; echo "base image $image: debootstrap $suite failed (log $root.log)" >&2; exit 1; }
rm -f "$root.log"
# Keep the image small and apt usable inside it, as the official image does.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import -c 'CMD ["bash"]' - "$image" >/dev/null
echo "base image $image: imported"
