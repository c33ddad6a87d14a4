#!/usr/bin/env bash
# Install the Debian packages that the end-to-end tests run as real peers or use
# as tools (logrotate, systemd-analyze, chromium for the status page's browser test,
# PostgreSQL and slapd for the pgsql: and ldap: lookup tables).
#
# Idempotent: a package is installed only when its binary is missing, and
# `apt-get update` runs only when something has to be installed. The tests start
# their own instances of these programs, so the services that the packages would
# start are kept from starting (policy-rc.d) and left disabled.
set -euo pipefail

# binary -> Debian package; each binary is looked up on PATH and in /usr/sbin.
declare -A PACKAGE_OF=(
    [unbound]=unbound
    [unbound-control]=unbound
    [smtp-source]=postfix
    [smtp-sink]=postfix
    [swaks]=swaks
    [fail2ban-regex]=fail2ban
    [postgrey]=postgrey
    [nmap]=nmap
    [redis-server]=redis-server
    [haproxy]=haproxy
    [logrotate]=logrotate
    [systemd-analyze]=systemd
    [chromium]=chromium
    [chromedriver]=chromium-driver
    [pg_ctlcluster]=postgresql
    [slapd]=slapd
    [ldapadd]=ldap-utils
)
# the services those packages ship; none may run outside the tests
SERVICES=(unbound unbound-resolvconf postfix fail2ban postgrey redis-server haproxy postgresql slapd)

have() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]
}

missing=()
for bin in "${!PACKAGE_OF[@]}"; do
    if ! have "$bin"; then
        pkg=${PACKAGE_OF[$bin]}
        [[ " ${missing[*]-} " == *" $pkg "* ]] || missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-test-deps: all test peers present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: not root, skipping apt; missing packages: ${missing[*]}" >&2
    echo "install-test-deps: as root run: apt-get install ${missing[*]}" >&2
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections

# Keep the packages' maintainer scripts from starting their daemons. An existing
# policy-rc.d is the administrator's and is left as it is.
policy=/usr/sbin/policy-rc.d
own_policy=no
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=yes
fi
cleanup() { if [ "$own_policy" = yes ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

echo "install-test-deps: installing ${missing[*]}"
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"

# Only the services of packages installed just now are touched: a resolver or
# mail server the administrator already runs stays as it is.
for svc in "${SERVICES[@]}"; do
    case " ${missing[*]} " in
        *" ${svc%-resolvconf} "*) ;;
        *) continue ;;
    esac
    if [ -d /run/systemd/system ]; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    else
        systemctl disable "$svc" >/dev/null 2>&1 || true
        if [ -x "/etc/init.d/$svc" ]; then
            "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
        fi
    fi
done
echo "install-test-deps: done"
