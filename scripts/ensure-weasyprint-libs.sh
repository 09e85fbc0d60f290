#!/usr/bin/env bash
# WeasyPrint (invoice PDFs) needs Pango, and renders several times faster with HarfBuzz's
# font subsetter (libharfbuzz-subset0; without it fontTools subsets the fonts in Python, ~80 %
# of a render). Install Debian's packages when missing and we are root; otherwise say so: the
# platform still runs, PDF downloads answer 503 without Pango and are slower without the subsetter.
set -u
packages="libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core"
have() { ldconfig -p 2>/dev/null | grep -q "$1"; }
if have 'libpango-1.0.so.0' && have 'libpangoft2-1.0.so.0' && have 'libharfbuzz-subset.so.0'; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[weasyprint] installing $packages"
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
else
  echo "[weasyprint] missing system libraries: run 'sudo apt-get install $packages' for (fast) invoice PDFs"
fi
exit 0
