#!/usr/bin/env bash
# Installs every Debian package Aerie needs to build, test and run its demo.
# Idempotent: installs only what is missing, so repeated runs cost ~nothing.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  clang libclang-rt-14-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev libasio-dev
  libsqlite3-dev libssl-dev libseccomp-dev libcap-dev
  zlib1g-dev libicu-dev
  python3 graphviz
  openssh-client openssh-server iproute2
  e2fsprogs util-linux
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: missing packages: ${missing[*]} (run as root to install them)" >&2
  exit 1
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# openssh-server is for Qubes Air relays (sshd -i inside a relay qube): the
# host's own ssh service must not be started by its installation.
made_policy_rc=no
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  made_policy_rc=yes
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}"
[ "$made_policy_rc" = no ] || rm -f /usr/sbin/policy-rc.d
