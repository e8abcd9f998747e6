#!/bin/sh
# Debian packages virtkit needs, installed only where missing (safe to re-run). Needs root.
set -eu

PACKAGES="qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-dev pkg-config
busybox-static python3 python3-venv python3-dev gcc util-linux libvirt-daemon-driver-storage-rbd
iproute2 dnsmasq-base iptables debootstrap e2fsprogs openssh-client genisoimage openssl chromium
prometheus"
# prometheus: the monitoring tests run their own (its binary and promtool), never the service
[ "${WITH_BENCH:-0}" = 1 ] && PACKAGES="$PACKAGES virtinst ksmtuned prometheus-libvirt-exporter"

if [ "$(id -u)" != 0 ]; then
    echo "install-deps: run as root (it installs Debian packages)" >&2
    exit 1
fi

missing=""
for pkg in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $pkg"
    fi
done
if [ -n "$missing" ]; then
    echo "installing:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
    # Debian starts a newly installed prometheus (and the libvirt exporter) as a service: the
    # tests start their own on loopback, so a service this run brought is stopped again.
    for svc in prometheus prometheus-libvirt-exporter; do
        case " $missing " in
            *" $svc "*) command -v systemctl >/dev/null 2>&1 &&
                systemctl disable --now "$svc" >/dev/null 2>&1 || true ;;
        esac
    done
fi

# The web UI's assets come from npm: Debian's Node where none is installed (a Node from
# elsewhere, e.g. NodeSource, brings its own npm and is kept).
if ! command -v npm >/dev/null 2>&1; then
    echo "installing: nodejs npm"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm
fi

# The tiny guest boots Debian's small cloud kernel. Where none is installed, the package is
# unpacked into virtkit's cache instead of installed: no change to /boot or the boot loader.
KERNEL_DIR=/var/cache/virtkit/kernel
if ! ls /boot/vmlinuz-*-cloud-amd64 >/dev/null 2>&1 && ! ls "$KERNEL_DIR"/boot/vmlinuz-* >/dev/null 2>&1; then
    pkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/ {print $2; exit}')
    echo "unpacking $pkg into $KERNEL_DIR (for the tiny test guest)"
    tmp=$(mktemp -d)
    (cd "$tmp" && apt-get download -qq "$pkg")
    mkdir -p "$KERNEL_DIR"
    dpkg-deb -x "$tmp"/*.deb "$KERNEL_DIR"
    chmod -R a+rX "$KERNEL_DIR"
    rm -rf "$tmp"
fi
