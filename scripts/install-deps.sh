#!/usr/bin/env bash
# Installs the Debian packages Agora's build and tests need, when any is missing (a fresh machine).
#   protobuf-compiler  etcd-client's build script compiles etcd's protobufs
#   libseccomp-dev     libcontainer's seccomp support (with pkg-config to find it)
#   etcd-server        the store tests start a real etcd
#   busybox-static     a tiny root filesystem for container tests
#   crun               the agent benchmark's peer: `crun run` of the same command, measured in the same run
#   curl               tests probe the apiserver as a client without credentials (and from inside tasks)
#   python3            the Python example framework runs in the e2e tests
#   chromium           the dashboard's tests and benchmark run it headless (the DevTools protocol)
#   fonts-dejavu-core  so the dashboard's screenshots have text
#   tini               its static build is each container's PID 1 (signals forwarded, orphans reaped)
#   docker-registry    a real registry (distribution 2.8) the image-pull tests start on loopback
#   skopeo             pushes the tests' images to it
#   apache2-utils      htpasswd (bcrypt), for the registry that asks for a password
#   openssl            the certificates of the registry that serves TLS
# and the Python `kubernetes` client (pip, pinned), which an e2e test drives Agora with.
set -euo pipefail
packages=(protobuf-compiler libseccomp-dev pkg-config etcd-server busybox-static crun curl python3 chromium fonts-dejavu-core tini docker-registry skopeo apache2-utils openssl)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi
KUBERNETES_CLIENT=37.0.2
if ! python3 -c "import kubernetes, sys; sys.exit(kubernetes.__version__ != '$KUBERNETES_CLIENT')" 2>/dev/null; then
  echo "installing: the Python kubernetes client $KUBERNETES_CLIENT"
  if ! python3 -m pip --version >/dev/null 2>&1; then
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-pip
  fi
  # Debian's own python3 refuses pip installs outside a venv (PEP 668); the client is a test dependency only.
  python3 -m pip install -q "kubernetes==$KUBERNETES_CLIENT" 2>/dev/null \
    || python3 -m pip install -q --break-system-packages "kubernetes==$KUBERNETES_CLIENT"
fi
