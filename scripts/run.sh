#!/usr/bin/env bash
# `make run`: a one-machine cluster in ~/.agora (or $AGORA_DATA_DIR) with the examples in manifests/ applied.
# `agora up` stays in the foreground; Ctrl-C stops it, and `make run` again continues where it stopped. ~/.agora is
# where every `agora` command looks for a cluster by itself, so a second terminal needs no setup.
set -euo pipefail
cd "$(dirname "$0")/.."
agora="${AGORA_BIN:-${CARGO_TARGET_DIR:-target}/debug/agora}"
dir="${AGORA_DATA_DIR:-$HOME/.agora}"
listen="${AGORA_LISTEN:-127.0.0.1:5050}"

# The container example (manifests/cache.yaml) runs busybox: build its image from Debian's busybox-static once.
if ! "$agora" image list --work-dir "$dir/agent" 2>/dev/null | grep -q '^busybox:latest '; then
    if [ ! -x /bin/busybox ]; then
        echo "make run: /bin/busybox is missing (make deps installs busybox-static)" >&2
        exit 1
    fi
    mkdir -p "$dir"
    chmod 700 "$dir"
    rootfs="$(mktemp -d "$dir/busybox-rootfs.XXXXXX")"
    mkdir -p "$rootfs/bin" "$rootfs/tmp" "$rootfs/etc" "$rootfs/proc" "$rootfs/dev" "$rootfs/sys"
    cp /bin/busybox "$rootfs/bin/busybox"
    for tool in sh echo cat ls mkdir sleep httpd env date; do ln -s busybox "$rootfs/bin/$tool"; done
    "$agora" image build --work-dir "$dir/agent" --rootfs "$rootfs" --tag busybox:latest
    # A directory made here a moment ago, holding no mount.
    rm -r "$rootfs"
fi

echo "agora is $agora: put it on your PATH in another terminal (export PATH=\"$(cd "$(dirname "$agora")" && pwd):\$PATH\")"
# More `agora up` flags may follow: `./scripts/run.sh --agent-resources "cpus:1;mem:1024"`.
exec "$agora" up --data-dir "$dir" --listen "$listen" --apply manifests "$@"
