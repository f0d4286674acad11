#!/usr/bin/env bash
# Render a report in headless Chromium to check that it opens and its figures show.
#   apt-get update && apt-get install -y chromium     # Debian package, once
#   scripts/screenshot_report.sh reports/x/report.html shot.png
# Then look at shot.png: the loss figures must be drawn, not broken-image icons.
set -euo pipefail
if [ $# -ne 2 ]; then
  echo "usage: $0 REPORT_HTML OUT_PNG" >&2
  exit 2
fi
html=$(realpath "$1")
out=$(realpath "$2")
[ -f "$html" ] || { echo "$0: no such file: $1" >&2; exit 2; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --screenshot="$out" --window-size=${WINDOW:-1200,1600} "file://$html"
[ -s "$out" ] || { echo "$0: chromium wrote no screenshot to $out" >&2; exit 1; }
