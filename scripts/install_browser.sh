#!/usr/bin/env bash
# Install Debian's chromium and its driver for tests/test_airflow_ui.py, when missing.
# Only as root with apt-get; elsewhere it says why and exits 1 (the test then skips, or fails
# under CI=true). Nothing else is downloaded: the test drives /usr/bin/chromium through
# /usr/bin/chromedriver.
set -euo pipefail

BROWSER_PACKAGES=(chromium chromium-driver)
BINARIES=(/usr/bin/chromium /usr/bin/chromedriver)

installed() {
  [[ -x "${BINARIES[0]}" && -x "${BINARIES[1]}" ]]
}

if installed; then
  exit 0
fi
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
  echo "install_browser: needs root and apt-get to install ${BROWSER_PACKAGES[*]}" >&2
  exit 1
fi
echo "install_browser: installing ${BROWSER_PACKAGES[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${BROWSER_PACKAGES[@]}" >/dev/null
installed || { echo "install_browser: ${BROWSER_PACKAGES[*]} installed, but ${BINARIES[*]} are not both there" >&2; exit 1; }
