#!/usr/bin/env bash
# Installs the real servers the test command runs on loopback (tests/real-servers):
# Postfix, Dovecot (IMAP, POP3) and INN, from Debian's packages. Nothing is started as a
# system service: services that installing would start are kept from starting (a
# policy-rc.d for the duration, when the machine has none) and stopped if they run
# anyway. A package that cannot be installed fails loudly. Idempotent.
set -euo pipefail

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
have_all() {
  command -v postfix >/dev/null && command -v dovecot >/dev/null && [ -x /usr/lib/dovecot/imap ] &&
    [ -x /usr/lib/dovecot/pop3 ] && [ -x /usr/lib/news/bin/nnrpd ] && [ -x /usr/lib/news/bin/makehistory ] &&
    dpkg-query -W -f='${Status}\n' inn2 2>/dev/null | grep -q 'install ok installed'
}
if have_all; then
  echo "install-real-servers: ok (postfix, dovecot, inn2 already installed)"
  exit 0
fi

echo "install-real-servers: installing postfix, dovecot-imapd, dovecot-pop3d, inn2"
export DEBIAN_FRONTEND=noninteractive
# Postfix asks what kind of site this is; a local-only one has a main.cf (INN's
# post-installation runs newaliases, which needs it) and no relaying.
echo "postfix postfix/main_mailer_type select Local only" | $SUDO debconf-set-selections
echo "postfix postfix/mailname string localhost.localdomain" | $SUDO debconf-set-selections
POLICY=/usr/sbin/policy-rc.d
ours=0
if [ ! -e $POLICY ]; then
  printf '#!/bin/sh\n# installed by mailtls install-real-servers.sh for the duration of one install\nexit 101\n' |
    $SUDO tee $POLICY >/dev/null
  $SUDO chmod 755 $POLICY
  ours=1
fi
restore() { [ $ours = 1 ] && $SUDO rm -f $POLICY; return 0; }
trap restore EXIT

$SUDO apt-get update -qq
if ! $SUDO apt-get install -y -qq --no-install-recommends postfix dovecot-imapd dovecot-pop3d inn2 >/tmp/mailtls-apt.log 2>&1; then
  # INN's post-installation check wants a domain name when the host name has none
  # (a container's "vm"): give /etc/news/inn.conf one and finish the configuration.
  if grep -q "domain not set in inn.conf\|newaliases" /tmp/mailtls-apt.log && [ -f /etc/news/inn.conf ]; then
    echo "install-real-servers: INN needs a domain: setting 'domain: localdomain' in /etc/news/inn.conf"
    $SUDO sed -i 's/^#\?domain:.*/domain:                      localdomain/' /etc/news/inn.conf
    grep -q '^domain:' /etc/news/inn.conf || echo 'domain:                      localdomain' | $SUDO tee -a /etc/news/inn.conf >/dev/null
    [ -f /etc/postfix/main.cf ] || $SUDO dpkg-reconfigure postfix
    $SUDO dpkg --configure -a
  else
    cat /tmp/mailtls-apt.log >&2
    echo "install-real-servers: apt-get install failed" >&2
    exit 1
  fi
fi

# Whatever started anyway is stopped: the tests run their own instances.
if pgrep -x master >/dev/null; then $SUDO postfix stop 2>/dev/null || true; fi
if pgrep -x dovecot >/dev/null; then $SUDO doveadm stop 2>/dev/null || true; fi
if pgrep -x innd >/dev/null; then $SUDO /usr/lib/news/bin/ctlinnd shutdown install 2>/dev/null || true; fi

have_all || { echo "install-real-servers: postfix, dovecot or inn2 is still missing after the install" >&2; exit 1; }
echo "install-real-servers: ok ($(postconf -d mail_version 2>/dev/null | sed 's/.*= /postfix /'), dovecot $(dovecot --version | cut -d' ' -f1), inn2 $(dpkg-query -W -f='${Version}' inn2))"
