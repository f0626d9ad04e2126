#!/usr/bin/env bash
# Make sure Debian's Chromium is present for the end-to-end browser test (a no-op when it is).
# Playwright drives this system browser; it never downloads one of its own.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if ! command -v apt-get >/dev/null; then
  echo "[browser] /usr/bin/chromium is missing and apt-get is not available: the browser test will fail; install Chromium" >&2
  exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
echo "[browser] installing Debian's chromium for the browser test"
if ! { $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; }; then
  echo "[browser] could not install chromium (needs root): run 'sudo apt-get install chromium', or the browser test will fail" >&2
fi
