#!/usr/bin/env bash
# Install everything voiptwisted's tests need on a fresh Debian 12 machine:
# the real SIP peers the integration tests start (Kamailio, SIPp, baresip),
# the audio tools they use, and the package itself with its test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    kamailio kamailio-tls-modules kamailio-extra-modules sip-tester baresip-core \
    sox libsox-fmt-all espeak-ng libopus0 openssl socat >/dev/null
python3 -m pip install -q -e '.[test,bench]' --config-settings editable_mode=compat
