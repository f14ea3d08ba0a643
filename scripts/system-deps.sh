#!/usr/bin/env bash
# Debian packages the browser tests need: Chromium (driven by Playwright; never a downloaded browser).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's chromium for the browser tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
elif [ "${CI:-}" = "true" ]; then
    echo "CI needs /usr/bin/chromium: run 'apt-get install chromium' as root" >&2
    exit 1
else
    echo "note: /usr/bin/chromium is missing; browser tests will be skipped (apt-get install chromium)" >&2
fi
