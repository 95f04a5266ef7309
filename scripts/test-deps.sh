#!/usr/bin/env bash
# Install the system tools some tests use beyond the project's Python dependencies (apt, Debian):
#   chromium, chromium-driver  the dashboard's browser tests (tests/integration/test_dashboard_browser.py)
#                              and scripts/dashboard-screenshots.py: headless Chromium driven by Selenium
#   fonts-dejavu-core          a font for the pages Chromium renders (its other recommends are not needed)
#   prometheus                 promtool, which checks a real node's /metrics exposition
#                              (tests/integration/test_monitoring.py)
# Each tool's tests skip with a reason when it is missing, so this script is never fatal in CI.
# Idempotent: installs only what is missing; needs root (apt-get).
# Add a tool: one `need COMMAND PACKAGE` (or `need_package PACKAGE`) line below.
set -euo pipefail

missing=()
need() {  # need COMMAND PACKAGE: install PACKAGE unless COMMAND is on the PATH (or is an existing file)
    if ! command -v "$1" >/dev/null 2>&1 && [ ! -x "$1" ]; then
        missing+=("$2")
    fi
}

need_package() {  # need_package PACKAGE: install PACKAGE unless dpkg has it
    dpkg -s "$1" >/dev/null 2>&1 || missing+=("$1")
}

need /usr/bin/chromium chromium
need /usr/bin/chromedriver chromium-driver
need_package fonts-dejavu-core
need promtool prometheus

if [ ${#missing[@]} -eq 0 ]; then
    echo "test-deps: nothing to install"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "test-deps: missing ${missing[*]}; run as root to install them (apt-get); their tests will skip" >&2
    exit 1
fi
echo "test-deps: apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
