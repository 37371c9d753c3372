#!/usr/bin/env bash
# Autobahn|Testsuite (wstest 0.8.2, python2.7) driver for throng.
#
# Usage:
#   scripts/autobahn.sh install
#       Install python2.7 (from Debian bullseye, pinned low) and a python2.7
#       virtualenv with autobahntestsuite. Idempotent; needs root for apt.
#   scripts/autobahn.sh server --url ws://127.0.0.1:9001 [--cases "1.*,2.*"]
#                              [--exclude "12.*,13.*"] [--out DIR] [--agent NAME]
#                              [--markdown FILE] [--ca PEM [--tls12]]
#       Run wstest's fuzzingclient against a server the CALLER has started,
#       then check the report (exit non-zero unless every case is OK or
#       INFORMATIONAL). A wss:// URL works as is, but wstest then checks no
#       certificate; with --ca it trusts only that CA and checks the URL's
#       host against the server's certificate (sending a name as SNI), and
#       with --tls12 it speaks TLS 1.2 only (else it offers 1.3).
#   scripts/autobahn.sh client --port 9002 [--cases ...] [--exclude ...]
#                              [--out DIR]
#       Start wstest's fuzzingserver on 127.0.0.1:PORT (to test a client);
#       runs until killed or until AUTOBAHN_TIMEOUT expires.
#
# Environment:
#   AUTOBAHN_VENV     virtualenv dir (default ~/.cache/throng/autobahn-venv)
#   AUTOBAHN_TIMEOUT  time cap in seconds for a wstest run (default 1800)
#   AUTOBAHN_SKIP_INSTALL=1  never install; fail if wstest is missing
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$SCRIPT_DIR/.." && pwd)
VENV=${AUTOBAHN_VENV:-${HOME:-/root}/.cache/throng/autobahn-venv}
CACHE_DIR=$(dirname "$VENV")
TIMEOUT=${AUTOBAHN_TIMEOUT:-1800}
WSTEST="$VENV/bin/wstest"
# Silence py2 deprecation noise (cryptography, pip) from the wstest process.
export PYTHONWARNINGS=${PYTHONWARNINGS:-ignore}
PY2=/usr/bin/python2.7
DEFAULT_CASES="1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*"

# Exact lock of what autobahntestsuite 0.8.2 + Twisted 20.3.0 resolve to on
# python2.7 (pip 20.3.4); all still carry py2 wheels/sdists on PyPI. wsaccel
# (from autobahn[accelerate]) has no wheel: built with python2.7-dev + gcc.
PY2_PINS=(
  autobahntestsuite==0.8.2 autobahn==0.10.9 txaio==2.1.0 Twisted==20.3.0
  attrs==21.4.0 Automat==22.10.0 cffi==1.15.1 constantly==15.1.0
  cryptography==3.3.2 enum34==1.1.10 hyperlink==21.0.0 idna==2.10
  incremental==22.10.0 ipaddress==1.0.23 Jinja2==2.11.3 klein==20.6.0
  linecache2==1.0.0 MarkupSafe==1.1.1 pyasn1==0.5.1 pyasn1-modules==0.3.0
  pycparser==2.21 PyHamcrest==1.10.1 pyOpenSSL==21.0.0
  service-identity==21.1.0 six==1.17.0 traceback2==1.4.0 Tubes==0.2.1
  typing==3.10.0.0 ujson==2.0.3 unittest2==1.1.0 Werkzeug==1.0.1
  wsaccel==0.6.6 zope.interface==5.5.2
)

log() { printf '[autobahn] %s\n' "$*" >&2; }
die() { printf '[autobahn] error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else die "need root to run: $*"
  fi
}

wstest_ok() {
  [ -x "$WSTEST" ] && "$WSTEST" --help >/dev/null 2>&1
}

# Print "URI KEYRING" of the deb822 stanza whose Suites: has plain "bookworm".
bookworm_source() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN { RS = ""; FS = "\n" }
      {
        uris = ""; keyring = ""; hit = 0
        for (i = 1; i <= NF; i++) {
          line = $i
          if (line ~ /^[ \t]*#/) continue
          if (line ~ /^URIs:/)      { sub(/^URIs:[ \t]*/, "", line); split(line, u, /[ \t]+/); uris = u[1] }
          if (line ~ /^Signed-By:/) { sub(/^Signed-By:[ \t]*/, "", line); keyring = line }
          if (line ~ /^Suites:/) {
            sub(/^Suites:[ \t]*/, "", line); n = split(line, s, /[ \t]+/)
            for (j = 1; j <= n; j++) if (s[j] == "bookworm") hit = 1
          }
        }
        if (hit && uris != "") { print uris, (keyring == "" ? "-" : keyring); exit }
      }' "$f"
  done | head -n 1
}

install_python2() {
  if [ -x "$PY2" ] && "$PY2" -c 'import ssl, zlib, ctypes' >/dev/null 2>&1 &&
     [ -f /usr/include/python2.7/Python.h ] && command -v gcc >/dev/null 2>&1; then
    log "python2.7 (+dev headers, gcc) already installed: $PY2"
    return
  fi
  local uri keyring src
  src=$(bookworm_source || true)
  uri=${src%% *}
  keyring=${src#* }
  if [ -z "$src" ] || [ -z "$uri" ]; then
    uri=http://deb.debian.org/debian
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  fi
  if [ -z "$keyring" ] || [ "$keyring" = "-" ] || [ "$keyring" = "$uri" ]; then
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  fi
  log "adding bullseye apt source: $uri (Signed-By: $keyring)"
  as_root tee /etc/apt/sources.list.d/bullseye.sources >/dev/null <<EOF
Types: deb
URIs: $uri
Suites: bullseye
Components: main
Signed-By: $keyring
EOF
  # Only take from bullseye what bookworm does not have (python2.7 & deps).
  as_root tee /etc/apt/preferences.d/bullseye-python2 >/dev/null <<'EOF'
Package: *
Pin: release n=bullseye
Pin-Priority: 100
EOF
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    python2.7 python2.7-dev gcc libc6-dev </dev/null
  "$PY2" --version
}

# virtualenv<20.22 is the last line that can create python2.7 envs. Install it
# into a private --target dir: works with pyenv and with Debian's
# externally-managed system python3 alike, and touches neither.
install_virtualenv() {
  local vdir="$CACHE_DIR/virtualenv-py3"
  if ! PYTHONPATH="$vdir" python3 -c 'import virtualenv' >/dev/null 2>&1; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
      log "installing python3-pip"
      as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-pip </dev/null >&2
    fi
    log "installing virtualenv<20.22 into $vdir"
    rm -rf "$vdir"
    python3 -m pip install -q --no-input --target "$vdir" 'virtualenv<20.22' >&2
  fi
  printf '%s\n' "$vdir"
}

do_install() {
  if wstest_ok; then
    log "wstest already installed: $WSTEST"
    return
  fi
  local start=$SECONDS vdir
  if ! command -v python3 >/dev/null 2>&1; then
    log "installing python3"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3 python3-pip </dev/null
  fi
  install_python2
  vdir=$(install_virtualenv)
  mkdir -p "$CACHE_DIR"
  rm -rf "$VENV"
  log "creating python2.7 virtualenv $VENV"
  PYTHONPATH="$vdir" python3 -m virtualenv -q -p "$PY2" "$VENV"
  log "installing autobahntestsuite (pinned)"
  "$VENV/bin/pip" install -q --no-input "${PY2_PINS[@]}"
  if ! wstest_ok; then
    "$WSTEST" --help || true
    die "wstest --help fails after install"
  fi
  log "installed wstest in $((SECONDS - start))s"
}

# Convert "1.*, 2.*" to a JSON list.
json_list() {
  python3 - "$1" <<'EOF'
import json, sys
print(json.dumps([c.strip() for c in sys.argv[1].split(",") if c.strip()]))
EOF
}

run_server_mode() {
  local url="" cases=$DEFAULT_CASES exclude="" out="" agent="throng" markdown="" ca="" tls12=0
  while [ $# -gt 0 ]; do
    case "$1" in
      --url) url=${2:?}; shift 2 ;;
      --cases) cases=${2:?}; shift 2 ;;
      --exclude) exclude=${2-}; shift 2 ;;
      --out) out=${2:?}; shift 2 ;;
      --agent) agent=${2:?}; shift 2 ;;
      --markdown) markdown=${2:?}; shift 2 ;;
      --ca) ca=${2:?}; shift 2 ;;
      --tls12) tls12=1; shift ;;
      *) die "server: unknown argument: $1" ;;
    esac
  done
  [ -n "$url" ] || die "server: --url ws://HOST:PORT is required"
  local run=("$WSTEST")
  if [ -n "$ca" ]; then
    [ -f "$ca" ] || die "server: --ca $ca: no such file"
    ca=$(cd "$(dirname "$ca")" && pwd)/$(basename "$ca")
    run=(env "AUTOBAHN_CA=$ca" "AUTOBAHN_TLS12=$tls12" "$VENV/bin/python" -c "$VERIFYING_WSTEST")
  elif [ "$tls12" = 1 ]; then
    die "server: --tls12 goes with --ca"
  fi
  out=${out:-$REPO_DIR/target/autobahn/server}
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  local report="$out/reports" spec="$out/fuzzingclient.json"
  rm -rf "$report"
  mkdir -p "$report"
  python3 - "$spec" "$report" "$agent" "$url" "$(json_list "$cases")" "$(json_list "$exclude")" <<'EOF'
import json, sys
spec, outdir, agent, url, cases, exclude = sys.argv[1:7]
with open(spec, "w") as f:
    json.dump({"outdir": outdir,
               "options": {"failByDrop": False},
               "servers": [{"agent": agent, "url": url}],
               "cases": json.loads(cases),
               "exclude-cases": json.loads(exclude),
               "exclude-agent-cases": {}}, f, indent=2)
    f.write("\n")
EOF
  log "spec: $spec"
  log "running fuzzingclient against $url (cap ${TIMEOUT}s)"
  local rc=0
  (cd "$out" && timeout --kill-after=10 "$TIMEOUT" "${run[@]}" -m fuzzingclient -s "$spec") || rc=$?
  if [ "$rc" -ne 0 ]; then
    [ "$rc" -eq 124 ] && log "wstest timed out after ${TIMEOUT}s"
    [ -f "$report/index.json" ] || die "wstest exited $rc and wrote no report"
    log "wstest exited $rc; checking the partial report"
  fi
  local check=(python3 "$SCRIPT_DIR/autobahn_check.py" "$report/index.json" --agent "$agent")
  [ -n "$markdown" ] && check+=(--markdown "$markdown")
  log "report: $report/index.html"
  "${check[@]}"
  return "$rc"
}

# wstest's fuzzingclient connects to wss:// with Twisted's ClientContextFactory, which verifies
# nothing and sends no SNI. This shim hands its connectWS Twisted's verifying options instead:
# only the CA in $AUTOBAHN_CA is trusted, and the certificate must name the URL's host (an IP
# address is checked against the IP SANs). With $AUTOBAHN_TLS12=1 it is held to TLS 1.2, through
# the version-locked method: Twisted 20.3's lowerMaximumSecurityTo disables the version it is
# given as well as those above it. wstest is imported first: it installs the reactor.
VERIFYING_WSTEST='
import os, sys
from autobahntestsuite.wstest import run
from autobahntestsuite import fuzzing
from twisted.internet import ssl
from OpenSSL import SSL
with open(os.environ["AUTOBAHN_CA"]) as f:
    trust = ssl.Certificate.loadPEM(f.read())
_connect = fuzzing.connectWS
def connectWS(factory, contextFactory=None, *args, **kwargs):
    if factory.isSecure and contextFactory is None:
        extra = {"method": SSL.TLSv1_2_METHOD} if os.environ.get("AUTOBAHN_TLS12") == "1" else {}
        contextFactory = ssl.optionsForClientTLS(unicode(factory.host), trustRoot=trust,
                                                 extraCertificateOptions=extra)
    return _connect(factory, contextFactory, *args, **kwargs)
fuzzing.connectWS = connectWS
sys.argv[0] = "wstest"
sys.exit(run())
'

LOOPBACK_WSTEST='
import sys
from twisted.internet import epollreactor
epollreactor.install()
from twisted.internet import reactor
_listen = reactor.listenTCP
def listenTCP(port, factory, backlog=50, interface=""):
    return _listen(port, factory, backlog, interface or "127.0.0.1")
reactor.listenTCP = listenTCP
from autobahntestsuite.wstest import run
sys.argv[0] = "wstest"
sys.exit(run())
'

run_client_mode() {
  local port=9002 cases=$DEFAULT_CASES exclude="" out=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --port) port=${2:?}; shift 2 ;;
      --cases) cases=${2:?}; shift 2 ;;
      --exclude) exclude=${2-}; shift 2 ;;
      --out) out=${2:?}; shift 2 ;;
      *) die "client: unknown argument: $1" ;;
    esac
  done
  out=${out:-$REPO_DIR/target/autobahn/client}
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  local report="$out/reports" spec="$out/fuzzingserver.json"
  mkdir -p "$report"
  python3 - "$spec" "$report" "$port" "$(json_list "$cases")" "$(json_list "$exclude")" <<'EOF'
import json, sys
spec, outdir, port, cases, exclude = sys.argv[1:6]
with open(spec, "w") as f:
    json.dump({"url": "ws://127.0.0.1:%d" % int(port),
               "outdir": outdir,
               "options": {"failByDrop": False},
               "cases": json.loads(cases),
               "exclude-cases": json.loads(exclude),
               "exclude-agent-cases": {}}, f, indent=2)
    f.write("\n")
EOF
  log "spec: $spec; reports (written on updateReports): $report"
  log "starting fuzzingserver on ws://127.0.0.1:$port (cap ${TIMEOUT}s)"
  cd "$out"
  # wstest always binds all interfaces; this shim makes it bind loopback only.
  exec timeout --kill-after=10 "$TIMEOUT" "$VENV/bin/python" -c "$LOOPBACK_WSTEST" \
    -m fuzzingserver -s "$spec"
}

main() {
  local mode=${1:-}
  [ $# -gt 0 ] && shift
  case "$mode" in
    install) do_install ;;
    server|client)
      if [ "${AUTOBAHN_SKIP_INSTALL:-0}" = 1 ]; then
        wstest_ok || die "wstest not installed at $WSTEST"
      else
        do_install
      fi
      if [ "$mode" = server ]; then run_server_mode "$@"; else run_client_mode "$@"; fi
      ;;
    -h|--help|help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
    *) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
  esac
}

main "$@"
