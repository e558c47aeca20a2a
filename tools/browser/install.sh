#!/usr/bin/env bash
# Debian's Chromium and its matching ChromeDriver (one source package, one version: they always agree),
# for the browser test of the explorer (tests/test_explorer_browser.py). Nothing is downloaded from
# outside Debian's package archive: Selenium is given /usr/bin/chromedriver and never fetches a driver.
# Idempotent: does nothing when both are installed. Needs root (apt-get), as on CI.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "tools/browser/install.sh: no apt-get here; install Chromium and a ChromeDriver of the same version" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
chromium --version && chromedriver --version
