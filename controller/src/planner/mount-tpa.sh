#!/bin/bash
# Managed by tpa: the filesystem of one volume, made unless the volume has one, and mounted
# now and at boot (an /etc/fstab line naming the device as found, as TPA does).
#
#   mount-tpa check|apply MOUNTPOINT FSTYPE MOUNTOPTS N FSOPT1..FSOPTN DEVICE...
#
# The first DEVICE that is a block device is the volume (one EBS volume has several names).
# `check` changes nothing and exits 0 when all is in place. tpa never formats a device that
# holds a filesystem or a partition table, and never mounts over a directory that has files.
set -euo pipefail

mode=$1 mountpoint=$2 fstype=$3 mountopts=$4 n=$5
shift 5
fsopts=("${@:1:n}")
shift "$n"

fail() {
    echo "mount-tpa: $*" >&2
    exit 1
}

name= device=
for d in "$@"; do
    if [ -b "$d" ]; then
        name=$d
        device=$(readlink -f -- "$d")
        break
    fi
done
[ -n "$device" ] || fail "no block device at $*: is the volume attached? check its device_name in config.yml"

# What the device holds (TYPE=, PTTYPE= lines); blkid exits 2 for a blank device.
probe() {
    local rc=0
    blkid -p -o export -- "$device" || rc=$?
    [ "$rc" -eq 0 ] || [ "$rc" -eq 2 ] || fail "blkid cannot read $device (exit $rc)"
}
field() { sed -n "s/^$1=//p" <<<"$info"; }

info=$(probe)
found=$(field TYPE)
table=$(field PTTYPE)
if [ -z "$found" ] && [ -n "$table" ]; then
    fail "$device holds a $table partition table; tpa formats blank volumes only: name a partition as device_name, or wipe the disk"
fi
if [ -n "$found" ] && [ "$found" != "$fstype" ]; then
    fail "$device holds a $found filesystem, not $fstype as config.yml says; tpa never reformats a volume: set fstype: $found, or wipe the volume to start afresh"
fi

# True when the volume is what is mounted at the mountpoint.
mounted() {
    [ "$(mountpoint -d "$mountpoint" 2>/dev/null)" = "$(mountpoint -x "$device")" ]
}
line="$name $mountpoint $fstype $mountopts 0 2"
in_fstab() { [ -f /etc/fstab ] && grep -qxF -- "$line" /etc/fstab; }

if [ "$mode" = check ]; then
    if [ -n "$found" ] && mounted && in_fstab; then
        exit 0
    fi
    exit 1
fi

# Refused before anything changes: a mountpoint taken, or files the volume would hide.
if ! mounted; then
    if mountpoint -q "$mountpoint"; then
        fail "$mountpoint is already the mountpoint of another device; unmount it, or give the volume another mountpoint"
    fi
    if [ -d "$mountpoint" ] && [ -n "$(ls -A -- "$mountpoint")" ]; then
        fail "$mountpoint is not empty: mounting the volume there would hide its files; move them onto the volume or away, then deploy again"
    fi
fi

if [ -z "$found" ]; then
    "mkfs.$fstype" -q "${fsopts[@]}" "$device"
fi

# The fstab line replaces any other line for this mountpoint or this device.
fstab_changed=
if ! in_fstab; then
    touch /etc/fstab
    tmp=$(mktemp /etc/fstab.tpa.XXXXXX)
    awk -v mp="$mountpoint" -v src="$name" '$1 != src && $2 != mp' /etc/fstab >"$tmp"
    echo "$line" >>"$tmp"
    chmod 644 "$tmp"
    mv -f -- "$tmp" /etc/fstab
    fstab_changed=1
    systemctl daemon-reload 2>/dev/null || true
fi

if mounted; then
    if [ -n "$fstab_changed" ]; then
        mount -o remount "$mountpoint"
    fi
else
    mkdir -p -- "$mountpoint"
    mount "$mountpoint"
fi
