#!/bin/sh
# Create (once) and boot the demo VM, then show it. Safe to re-run.
set -eu
VIRTKIT=${VIRTKIT:-.venv/bin/virtkit}
NAME=virtkit-demo

# Where no udev manages /dev, /dev/kvm is often root:root 0600 and libvirt's QEMU user is
# denied it: give it what Debian's udev rule gives it (root:kvm 0660), and say so.
$VIRTKIT host fix-kvm
$VIRTKIT host info
echo
# the default directory pool, where new disks, clones and imported images go
if ! $VIRTKIT pool show default >/dev/null 2>&1; then
    $VIRTKIT pool create default --path /var/lib/libvirt/images
fi
$VIRTKIT pool list
echo
guest=$($VIRTKIT dev tiny-guest)
field() { printf '%s' "$guest" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

if ! $VIRTKIT vm show "$NAME" >/dev/null 2>&1; then
    $VIRTKIT vm create "$NAME" --memory 128M --vcpus 1 \
        --kernel "$(field kernel)" --initrd "$(field initrd)" \
        --cmdline "console=tty0 console=ttyS0" --graphics vnc \
        --tag demo --description "virtkit's demo VM: a kernel and a busybox initramfs"
fi
state=$($VIRTKIT vm show "$NAME" --json | python3 -c "import json,sys; print(json.load(sys.stdin)['state'])")
case "$state" in
    running) ;;
    paused) $VIRTKIT vm resume "$NAME" ;;
    *) $VIRTKIT vm start "$NAME" ;;
esac

marker=$(field boot_marker)
i=0
until $VIRTKIT vm console-log "$NAME" | grep -q "$marker"; do
    i=$((i + 1))
    if [ $i -gt 600 ]; then echo "the demo VM did not print its boot marker within 60 s" >&2; exit 1; fi
    sleep 0.1
done

echo
$VIRTKIT vm list
echo
echo "--- console output of $NAME ---"
$VIRTKIT vm console-log "$NAME"
echo
echo "---"

# The API (and the web UI) on 127.0.0.1:8470: the first user once, then the service, once.
$VIRTKIT user ensure-admin
PORT=${VIRTKIT_API_PORT:-8470}
URL="http://127.0.0.1:$PORT"
healthy() { python3 -c "import urllib.request as u; u.urlopen('$URL/healthz', timeout=1)" 2>/dev/null; }
if healthy; then
    echo "virtkit serve already answers on $URL"
else
    mkdir -p /var/log/virtkit
    setsid nohup $VIRTKIT --log-json serve --port "$PORT" >>/var/log/virtkit/serve.log 2>&1 &
    echo $! > /run/virtkit-serve.pid
    i=0
    until healthy; do
        i=$((i + 1))
        if [ $i -gt 150 ]; then
            echo "virtkit serve did not start; see /var/log/virtkit/serve.log" >&2
            exit 1
        fi
        sleep 0.2
    done
    echo "virtkit serve runs on $URL (pid $(cat /run/virtkit-serve.pid), log /var/log/virtkit/serve.log)"
fi
echo "  web UI: $URL/   (VMs, consoles in the browser, create wizard, tasks, users, audit)"
echo "  API: $URL/api/v1/   OpenAPI: $URL/api/v1/openapi.json   browsable: $URL/api/v1/docs"
echo "  log in as admin (the password was shown once, above, when the user was made;"
echo "  set another with: $VIRTKIT user passwd admin)"
echo
echo "virtkit is ready. Try:"
echo "  $VIRTKIT vm console $NAME      (Ctrl+] leaves)"
echo "  $VIRTKIT vm shutdown $NAME"
echo "  $VIRTKIT vm delete $NAME --force"
