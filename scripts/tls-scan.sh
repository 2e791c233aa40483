#!/usr/bin/env bash
# TLS scan of the fieldseal listener with two independent scanners, testssl.sh and sslyze.
#
#   scripts/tls-scan.sh                      # summary on stdout, progress on stderr
#   scripts/tls-scan.sh > docs/tls-scan-$(date +%F).txt
#
#   FIELDSEAL_BIN=target/release/fieldseal   binary to scan (default target/debug/fieldseal;
#                                            the default is built with cargo when missing)
#   TLS_SCAN_KEEP=1                          keep the work directory (full JSON reports, logs)
#
# What it does:
#   1. installs what it needs: Debian `testssl.sh` (apt-get, if `testssl` is missing) and
#      sslyze (PyPI, pinned) in a venv under .tools/ (gitignored);
#   2. makes a CA and a leaf certificate signed by it (openssl; ECDSA P-256, SAN localhost and
#      127.0.0.1, serverAuth) and a chain file leaf + CA;
#   3. starts a trivial upstream (python3 -m http.server) and fieldseal in front of it with that
#      chain (config with no routes: the TLS listener is what is scanned);
#   4. runs `testssl --full --add-ca CA --jsonfile` and `sslyze --json_out --certinfo_ca_file CA`
#      with every scan command;
#   5. reads both JSON reports with scripts/tls_scan_check.py, which prints the summary and
#      exits non-zero on any finding (only TLS 1.3 offered, no testssl finding of severity
#      LOW or above outside its commented allowlist, only TLS 1.3 suites accepted, chain valid
#      against the CA, no vulnerability flagged). The exit status is the checker's; the
#      scanners' own exit codes are not used.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FIELDSEAL_BIN:-$ROOT/target/debug/fieldseal}
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
cd "$ROOT"
SSLYZE_VERSION=6.3.1
TOOLS=$ROOT/.tools
VENV=$TOOLS/sslyze-venv

say() { printf '[tls-scan] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 2; }

# --- 1. tools -----------------------------------------------------------------------------
if ! command -v testssl >/dev/null 2>&1; then
    say "installing Debian testssl.sh"
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq testssl.sh >&2
fi
PY=$(command -v python3) || die "python3 is needed"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || die "sslyze $SSLYZE_VERSION needs Python >= 3.10"
if ! "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('sslyze') != '$SSLYZE_VERSION')" 2>/dev/null; then
    say "installing sslyze $SSLYZE_VERSION into $VENV"
    rm -rf "$VENV"
    mkdir -p "$TOOLS"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q "sslyze==$SSLYZE_VERSION" >&2
fi
command -v openssl >/dev/null || die "openssl is needed"

if [ ! -x "$BIN" ]; then
    [ -z "${FIELDSEAL_BIN:-}" ] || die "FIELDSEAL_BIN=$BIN is not an executable"
    say "building target/debug/fieldseal"
    cargo build --bin fieldseal >&2
fi

WORK=$(mktemp -d -t fieldseal-tls-scan-XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "${TLS_SCAN_KEEP:-}" = 1 ]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {   # wait_port PORT PID WHAT
    for _ in $(seq 300); do
        kill -0 "$2" 2>/dev/null || die "$3 exited early"
        if "$PY" -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 0.2).close()" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    die "$3 did not open port $1"
}

# --- 2. PKI (leaf valid 90 days: testssl rates < 60 days left MEDIUM, < 30 HIGH) --------
say "making a CA and a localhost certificate in $WORK"
cd "$WORK"
cat > ca.ext <<'EOF'
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
cat > leaf.ext <<'EOF'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
openssl req -new -x509 -key ca.key -sha256 -days 365 -subj "/O=fieldseal tls-scan/CN=fieldseal tls-scan CA" \
    -extensions v3_ca -config <(printf '[req]\ndistinguished_name=dn\n[dn]\n[v3_ca]\n'; cat ca.ext) -out ca.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out leaf.key 2>/dev/null
openssl req -new -key leaf.key -subj "/O=fieldseal tls-scan/CN=localhost" -out leaf.csr
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -sha256 -days 90 \
    -extfile leaf.ext -out leaf.pem 2>/dev/null
cat leaf.pem ca.pem > chain.pem
chmod 600 ca.key leaf.key
openssl verify -CAfile ca.pem leaf.pem >&2

# --- 3. upstream + fieldseal ---------------------------------------------------------------
mkdir www
printf '{"ok":true}\n' > www/index.html
UP_PORT=$(free_port)
"$PY" -m http.server --bind 127.0.0.1 --directory www "$UP_PORT" > upstream.log 2>&1 &
PIDS+=($!)
wait_port "$UP_PORT" "${PIDS[-1]}" "upstream"

PORT=$(free_port)
cat > fieldseal.yaml <<EOF
listen: "127.0.0.1:$PORT"
upstream: "http://127.0.0.1:$UP_PORT"
admin: "127.0.0.1:0"
tls:
  cert: "$WORK/chain.pem"
  key: "$WORK/leaf.key"
EOF
FIELDSEAL_LOG=warn "$BIN" run --config fieldseal.yaml > fieldseal.log 2>&1 &
PIDS+=($!)
wait_port "$PORT" "${PIDS[-1]}" "fieldseal"
say "fieldseal ($("$BIN" --version)) on 127.0.0.1:$PORT"

# --- 4. scanners -------------------------------------------------------------------------------
say "testssl --full (a few minutes)"
set +e
testssl --quiet --color 0 --warnings off --full --add-ca "$WORK/ca.pem" --ip 127.0.0.1 \
    --jsonfile "$WORK/testssl.json" "https://localhost:$PORT" > testssl.txt 2>&1
TESTSSL_RC=$?
say "sslyze"
"$VENV/bin/sslyze" --quiet --json_out "$WORK/sslyze.json" --mozilla_config disable \
    --sslv2 --sslv3 --tlsv1 --tlsv1_1 --tlsv1_2 --tlsv1_3 --certinfo --certinfo_ca_file "$WORK/ca.pem" \
    --heartbleed --openssl_ccs --robot --reneg --compression --fallback --early_data --elliptic_curves \
    --resum --ems --http_headers "localhost:$PORT{127.0.0.1}" > sslyze.txt 2>&1
SSLYZE_RC=$?
set -e
say "exit codes (informational only): testssl $TESTSSL_RC, sslyze $SSLYZE_RC"
kill -0 "${PIDS[-1]}" 2>/dev/null || die "fieldseal died during the scan: $(tail -5 fieldseal.log)"

# --- 5. verdict from the JSON ------------------------------------------------------------------
"$PY" "$ROOT/scripts/tls_scan_check.py" \
    --testssl "$WORK/testssl.json" --sslyze "$WORK/sslyze.json" --ca "$WORK/ca.pem" \
    --tools "testssl.sh $(dpkg-query -W -f '${Version}' testssl.sh 2>/dev/null || echo '?') (Debian); sslyze $SSLYZE_VERSION; $(openssl version)" \
    --target "fieldseal $("$BIN" --version | awk '{print $2}') ($BIN, built $(date -u -r "$BIN" '+%F %H:%M UTC')) on 127.0.0.1:$PORT, chain leaf+CA (ECDSA P-256)"
