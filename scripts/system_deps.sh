#!/usr/bin/env bash
# System programs the test suite needs, installed from Debian's packages when missing (a no-op
# when present): Chromium for the end-to-end browser tests (Playwright drives this system
# browser; it never downloads one of its own) and a Java runtime for the reference caption
# metrics (pycocoevalcap's tokenizer and METEOR are Java).
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || command -v chromium >/dev/null || missing+=(chromium)
command -v java >/dev/null || missing+=(default-jre-headless)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "[system] missing ${missing[*]} and apt-get is not available: install them, or those tests will fail" >&2
  exit 0
fi
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo -n"
echo "[system] installing ${missing[*]} for the tests"
if ! { $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
  echo "[system] could not install ${missing[*]} (needs root): run 'sudo apt-get install ${missing[*]}', or those tests will fail" >&2
fi
