#!/bin/sh
# The web UI's JavaScript and CSS from npm (noVNC, xterm.js, htmx), into UI_ASSETS (default
# /var/cache/virtkit/ui, which `virtkit serve` reads; setting `ui_assets`). Nothing of it is
# copied into the repository. Safe to re-run: it does nothing when the pinned versions are there.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
dest=${UI_ASSETS:-/var/cache/virtkit/ui}
want="$here/src/virtkit/web/package.json"

if ! command -v npm >/dev/null 2>&1; then
    echo "install-ui: npm is missing (scripts/install-deps.sh installs Debian's nodejs and npm)" >&2
    exit 1
fi
if [ -f "$dest/package.json" ] && cmp -s "$want" "$dest/package.json" && [ -f "$dest/.installed" ]; then
    exit 0
fi
mkdir -p "$dest"
cp "$want" "$dest/package.json"
rm -f "$dest/.installed"
echo "install-ui: npm install into $dest"
(cd "$dest" && npm install --no-audit --no-fund --omit=dev --loglevel=error)
chmod -R a+rX "$dest"
touch "$dest/.installed"
