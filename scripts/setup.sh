#!/usr/bin/env bash
# Installs what wardready needs on a Debian machine: Debian packages (when run as root),
# then a virtual environment in .venv with the project and its test tools.
# Sourced by demo.sh and test.sh; safe to run again (it only adds what is missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# iproute2 .. ethtool: emulated ward links in tests (lab/netlab.py); libnetfilter-queue-dev,
# build-essential, python3-dev: pip builds PyPI netfilterqueue (its delayer) from source;
# openssh-server: a real SSH peer for the network-device check's netmiko `linux` type;
# tmux: a real terminal for the `wardready-agent check` table test;
# prometheus-alertmanager: amtool, to check the example routing (prometheus/alertmanager.yml);
# prometheus-node-exporter, prometheus-pushgateway: what the benchmarks compare with (bench/);
# victoria-metrics: a remote-write receiver besides Prometheus's own (docs/remote-write.md);
# fonts-dejavu-core: the Unicode font the request list's PDF embeds; poppler-utils: its tests
# read the PDF back (pdftotext) and render a page (pdftoppm); faketime: an agent whose clock
# is off (tests/test_clock_offset.py).
DEBIAN_PACKAGES=(prometheus iperf3 iputils-ping iproute2 nftables iptables ethtool
                 libnetfilter-queue-dev build-essential python3-dev openssh-server tmux
                 prometheus-alertmanager prometheus-node-exporter prometheus-pushgateway
                 victoria-metrics fonts-dejavu-core poppler-utils faketime)
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing Debian packages ${missing[*]}: run as root, or: sudo apt-get install ${missing[*]}" >&2
  fi
fi

if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [[ ! -e $stamp ]]; then
  echo "setup: installing wardready and its dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test,bench]'
  rm -f .venv/.installed-* && touch "$stamp"
fi
