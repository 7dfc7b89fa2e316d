#!/usr/bin/env bash
# Debian's Chromium for tests/test_site.py (the docs site in a headless browser). Installed as root with apt-get where
# it is missing; elsewhere the test skips and says why. Always exits 0.
set -u
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "chromium: installing Debian's chromium with apt-get"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
    || echo "chromium: apt-get could not install it; tests/test_site.py will skip"
else
  echo "chromium: not root on Debian, so not installing it; tests/test_site.py will skip"
fi
exit 0
