#!/bin/sh
# Start virtlogd and libvirtd unless libvirt already answers (systemd where it is PID 1).
set -eu

answers() { virsh -c qemu:///system version >/dev/null 2>&1; }

if answers; then
    exit 0
fi
if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then
    systemctl start virtlogd.socket libvirtd.socket libvirtd.service 2>/dev/null || systemctl start libvirtd
else
    # No systemd: start the daemons directly. Either refuses to start twice (pid file lock).
    virtlogd -d 2>/dev/null || true
    libvirtd -d 2>/dev/null || true
fi
for _ in $(seq 1 100); do
    if answers; then
        echo "libvirt is running"
        exit 0
    fi
    sleep 0.1
done
echo "start-libvirt: libvirtd did not answer on qemu:///system" >&2
exit 1
