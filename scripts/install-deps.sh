#!/usr/bin/env bash
# Installs the Debian packages Agora's build and tests need, when any is missing (a fresh machine).
#   protobuf-compiler  etcd-client's build script compiles etcd's protobufs
#   libseccomp-dev     libcontainer's seccomp support (with pkg-config to find it)
#   etcd-server        the store tests start a real etcd
#   busybox-static     a tiny root filesystem for container tests
#   crun               the agent benchmark's peer: `crun run` of the same command, measured in the same run
#   curl               tests probe the apiserver as a client without credentials (and from inside tasks)
#   python3            the Python example framework runs in the e2e tests
set -euo pipefail
packages=(protobuf-compiler libseccomp-dev pkg-config etcd-server busybox-static crun curl python3)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
