#!/usr/bin/env bash
# A lab for evaluating Slipway on one machine, without real hardware (as root). It is a lab,
# not a production path: a network namespace with a bridge for PXE, a link from this host to
# it for the admin API, and blank QEMU machines (BIOS or UEFI) plugged into the bridge, their
# console in this terminal.
#
#   scripts/lab.sh up                 the namespace, its PXE bridge br0 (10.99.0.1/24) and the
#                                     admin link (this host 10.99.255.1, the namespace .2)
#   scripts/lab.sh vm [bios|uefi] [--mac MAC] [--uuid UUID] [--name NAME] [--disk-gib N] [--log FILE]
#                                     a blank machine with an empty disk, network first; its
#                                     console is this terminal (quit: Ctrl-A then X), or FILE
#   scripts/lab.sh down               stops the machines and removes everything it made
#
# SLIPWAY_LAB names the namespace (default slipway-lab); one lab at a time, since every lab uses
# the addresses above. SLIPWAY_LAB_ACCEL=kvm uses KVM (default tcg). Disks and firmware variables
# live in ./var/lab/. Under QEMU without -uuid a machine has no SMBIOS UUID: Slipway counts that as absent.
set -euo pipefail
cd "$(dirname "$0")/.."
NS=${SLIPWAY_LAB:-slipway-lab}
# The host end of the admin link, named from the whole lab name (two names never share it).
HOSTIF="sl$(printf '%s' "$NS" | sha256sum | cut -c1-8)-h"
LABDIR=var/lab/$NS
die() { printf 'lab: %s\n' "$*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "run as root (network namespaces and taps)"
[[ $NS =~ ^[a-z0-9-]{1,20}$ ]] || die "SLIPWAY_LAB must be 1-20 of a-z, 0-9 and -"

in_ns() { ip netns exec "$NS" "$@"; }
exists() { ip netns list | awk '{print $1}' | grep -qxF "$NS"; }

case "${1:-}" in
  up)
    exists && die "the lab $NS exists; scripts/lab.sh down first"
    if ip -4 -o addr show | grep -q ' inet 10\.99\.255\.1/'; then
      die "10.99.255.1 is already on this host (another lab?): one lab at a time; SLIPWAY_LAB=NAME scripts/lab.sh down removes one"
    fi
    scripts/setup.sh --lab
    ip netns add "$NS"
    in_ns ip link set lo up
    in_ns ip link add br0 type bridge stp_state 0 forward_delay 0
    in_ns ip addr add 10.99.0.1/24 dev br0
    in_ns ip link set br0 up
    # Without it a socket bound to 0.0.0.0 cannot send to 255.255.255.255 (no default route here).
    in_ns ip route add 255.255.255.255/32 dev br0
    ip link add "$HOSTIF" type veth peer name adm0 netns "$NS"
    ip addr add 10.99.255.1/30 dev "$HOSTIF"
    ip link set "$HOSTIF" up
    in_ns ip addr add 10.99.255.2/30 dev adm0
    in_ns ip link set adm0 up
    mkdir -p "$LABDIR"
    cat <<EOF
Lab $NS is up: PXE bridge br0 10.99.0.1/24 inside it, admin link 10.99.255.1 (here) <-> 10.99.255.2 (there).
Start Slipway inside it, serving lab DHCP on the bridge and its admin API on the admin link:
  ip netns exec $NS bin/slipway up --data ./var --listen 10.99.255.2:8443 --pxe-interface br0 --pxe-mode dhcp --dhcp-range 10.99.0.100-10.99.0.199
and use the CLI from here:
  export SLIPWAY_SERVER=https://10.99.255.2:8443 SLIPWAY_CA=./var/keys/ca.crt
Then a blank machine: scripts/lab.sh vm bios   (or uefi)
EOF
    ;;
  vm)
    exists || die "no lab $NS: scripts/lab.sh up first"
    shift
    firmware=bios; mac=""; uuid=""; name=""; disk_gib=8; log=""
    while [ $# -gt 0 ]; do
      case "$1" in --mac|--uuid|--name|--disk-gib|--log) [ $# -ge 2 ] || die "$1 needs a value" ;; esac
      case "$1" in
        bios|uefi) firmware=$1 ;;
        --mac) mac=${2:?--mac MAC}; shift ;;
        --uuid) uuid=${2:?--uuid UUID}; shift ;;
        --name) name=${2:?--name NAME}; shift ;;
        --disk-gib) disk_gib=${2:?--disk-gib N}; shift ;;
        --log) log=${2:?--log FILE}; shift ;;
        *) die "unknown argument $1 (vm [bios|uefi] [--mac MAC] [--uuid UUID] [--name NAME] [--disk-gib N])" ;;
      esac
      shift
    done
    [ -n "$mac" ] || mac=$(printf '52:54:00:99:%02x:%02x' $((RANDOM % 256)) $((RANDOM % 256)))
    [[ $mac =~ ^([0-9a-f]{2}:){5}[0-9a-f]{2}$ ]] || die "--mac takes aa:bb:cc:dd:ee:ff in lower case"
    [ -z "$uuid" ] || [[ $uuid =~ ^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$ ]] || die "--uuid takes a UUID"
    [ -n "$name" ] || name="vm-${mac//:/}"
    [[ $name =~ ^[A-Za-z0-9_.-]{1,40}$ ]] || die "--name takes letters, digits, _ . -"
    [[ $disk_gib =~ ^[0-9]{1,4}$ ]] || die "--disk-gib takes a number"
    mkdir -p "$LABDIR"
    disk="$LABDIR/$name.img"
    [ -f "$disk" ] || qemu-img create -q -f raw "$disk" "${disk_gib}G"
    tap="t${mac//:/}"; tap=${tap:0:15}
    in_ns ip link show "$tap" >/dev/null 2>&1 || in_ns ip tuntap add dev "$tap" mode tap
    in_ns ip link set "$tap" master br0
    in_ns ip link set "$tap" up
    # A console written to a file never blocks QEMU's serial port (a pipe can, and bytes are lost).
    if [ -n "$log" ]; then console=(-nographic -monitor none -serial "file:$log"); else console=(-nographic -serial mon:stdio); fi
    # Emulation (TCG) by default: it works everywhere, if slowly. SLIPWAY_LAB_ACCEL=kvm is much
    # faster where KVM really works (under nested virtualization a guest can reset in a loop).
    accel_name=${SLIPWAY_LAB_ACCEL:-tcg}
    [[ $accel_name =~ ^(kvm|tcg)$ ]] || die "SLIPWAY_LAB_ACCEL is kvm or tcg"
    accel=(-accel "$accel_name")
    args=(-name "$name" "${accel[@]}" -m 1536 "${console[@]}"
          -netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" -device "e1000,netdev=n0,mac=$mac,bootindex=1"
          -drive "if=none,id=d0,format=raw,file=$disk" -device "virtio-blk-pci,drive=d0,bootindex=2")
    [ -z "$uuid" ] || args+=(-uuid "$uuid")
    if [ "$firmware" = uefi ]; then
      code=/usr/share/OVMF/OVMF_CODE_4M.fd; vars=/usr/share/OVMF/OVMF_VARS_4M.fd
      [ -f "$code" ] || die "no $code: apt-get install ovmf"
      [ -f "$LABDIR/$name.OVMF_VARS.fd" ] || cp "$vars" "$LABDIR/$name.OVMF_VARS.fd"
      args+=(-machine q35 -drive "if=pflash,format=raw,unit=0,readonly=on,file=$code" -drive "if=pflash,format=raw,unit=1,file=$LABDIR/$name.OVMF_VARS.fd")
    else
      args+=(-machine pc -boot order=nc)
    fi
    echo "lab: machine $name ($firmware, MAC $mac${uuid:+, UUID $uuid}); quit with Ctrl-A then X" >&2
    exec ip netns exec "$NS" qemu-system-x86_64 "${args[@]}"
    ;;
  down)
    if exists; then
      for pid in $(ip netns pids "$NS"); do kill "$pid" 2>/dev/null || true; done
      sleep 1
      for pid in $(ip netns pids "$NS"); do kill -9 "$pid" 2>/dev/null || true; done
      ip netns del "$NS"
    fi
    if ip link show "$HOSTIF" >/dev/null 2>&1; then ip link del "$HOSTIF"; fi
    rm -rf "$LABDIR"
    echo "lab: $NS removed"
    ;;
  *)
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
    exit 2
    ;;
esac
