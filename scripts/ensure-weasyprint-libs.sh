#!/usr/bin/env bash
# WeasyPrint (invoice PDFs) needs Pango. Install Debian's packages when missing and we are
# root; otherwise say so: the platform still runs, and PDF downloads answer 503 until then.
set -u
if ldconfig -p 2>/dev/null | grep -q 'libpango-1.0.so.0' && ldconfig -p | grep -q 'libpangoft2-1.0.so.0'; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[weasyprint] installing libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core"
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core >/dev/null
else
  echo "[weasyprint] Pango is missing: run 'sudo apt-get install libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core' for invoice PDFs"
fi
exit 0
