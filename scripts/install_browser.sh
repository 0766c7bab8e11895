#!/usr/bin/env bash
# Install Debian's chromium and its driver for tests/test_airflow_ui.py, when missing.
# Only as root with apt-get; elsewhere it says why and does nothing (the test then skips).
# Nothing else is downloaded: the test drives /usr/bin/chromium through /usr/bin/chromedriver.
set -euo pipefail

BROWSER_PACKAGES=(chromium chromium-driver)

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
  exit 0
fi
if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
  echo "install_browser: needs root and apt-get to install ${BROWSER_PACKAGES[*]}; the browser test will skip" >&2
  exit 1
fi
echo "install_browser: installing ${BROWSER_PACKAGES[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${BROWSER_PACKAGES[@]}" >/dev/null
