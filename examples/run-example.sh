#!/usr/bin/env bash
# The shared part of examples/*/run.sh: sourced by each example's run.sh after it has set
# APP_NAME and defined start_app (which execs the app on 127.0.0.1:$APP_PORT with "$PY").
# See examples/flask/run.sh for the environment variables it reads.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[1]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$HERE"
APP_PORT="${APP_PORT:-8000}"
FIELDSEAL_PORT="${FIELDSEAL_PORT:-8443}"
ADMIN_PORT="${ADMIN_PORT:-9901}"
RUN="$HERE/run"
mkdir -p "$RUN"
chmod 700 "$RUN"

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

# --- the fieldseal binary ---------------------------------------------------------------
find_fieldseal() {
    if [[ -n "${FIELDSEAL:-}" ]]; then
        [[ -x "$FIELDSEAL" ]] || die "FIELDSEAL=$FIELDSEAL is not an executable"
        printf '%s\n' "$FIELDSEAL"; return
    fi
    local candidate
    for candidate in "$ROOT/target/release/fieldseal" "$ROOT/target/debug/fieldseal"; do
        if [[ -x "$candidate" ]]; then printf '%s\n' "$candidate"; return; fi
    done
    if command -v fieldseal >/dev/null 2>&1; then command -v fieldseal; return; fi
    if [[ -f "$ROOT/Cargo.toml" ]] && command -v cargo >/dev/null 2>&1; then
        say "building fieldseal (cargo build --release)"
        (cd "$ROOT" && cargo build --release >&2)
        printf '%s\n' "$ROOT/target/release/fieldseal"; return
    fi
    die "fieldseal not found: set FIELDSEAL, put it on PATH, or run 'cargo build --release'"
}
FS="$(find_fieldseal)"

# --- Python and the app's requirements --------------------------------------------------
if [[ -n "${PYTHON:-}" ]]; then
    PY="$PYTHON"
else
    if [[ ! -x "$RUN/venv/bin/python" ]]; then
        say "creating a virtualenv in run/venv"
        python3 -m venv "$RUN/venv"
    fi
    PY="$RUN/venv/bin/python"
fi
if [[ "${SKIP_INSTALL:-}" != 1 ]]; then
    stamp="$RUN/.installed-$(printf '%s' "$PY" | cksum | cut -d' ' -f1)"
    if [[ ! -f "$stamp" || requirements.txt -nt "$stamp" ]]; then
        say "installing requirements.txt"
        "$PY" -m pip install --quiet --disable-pip-version-check -r requirements.txt
        touch "$stamp"
    fi
fi

# --- TLS: a private CA and a localhost certificate signed by it -------------------------
# Clients trust run/ca.pem (curl --cacert run/ca.pem); fieldseal serves run/cert.pem.
if [[ ! -f "$RUN/cert.pem" || ! -f "$RUN/key.pem" || ! -f "$RUN/ca.pem" ]]; then
    command -v openssl >/dev/null 2>&1 || die "openssl is needed to make the certificates"
    say "generating a CA and a localhost certificate in run/"
    (
        umask 077
        cd "$RUN"
        cat > openssl.cnf <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = fieldseal example
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
        openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
        openssl req -x509 -new -config openssl.cnf -extensions ca -key ca.key -sha256 -days 30 \
            -subj "/CN=fieldseal example CA" -out ca.pem
        openssl ecparam -name prime256v1 -genkey -noout -out key.pem 2>/dev/null
        openssl req -new -config openssl.cnf -key key.pem -subj "/CN=localhost" -out leaf.csr
        openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -CAserial ca.srl \
            -sha256 -days 30 -extfile openssl.cnf -extensions leaf -out cert.pem 2>/dev/null
        rm -f leaf.csr
        chmod 644 ca.pem cert.pem
    )
fi

# --- the keyring (never overwritten: tokens already handed out must keep opening) ---------
if [[ ! -f "$RUN/keyring.json" ]]; then
    say "creating run/keyring.json"
    "$FS" keys init --out "$RUN/keyring.json" >&2
fi

# --- start both; stop both on Ctrl-C -----------------------------------------------------
APP_PID="" FS_PID="" SLEEP_PID=""
cleanup() {
    trap - INT TERM EXIT
    local pid
    for pid in $FS_PID $APP_PID $SLEEP_PID; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in $FS_PID $APP_PID $SLEEP_PID; do wait "$pid" 2>/dev/null || true; done
    say "stopped"
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

wait_port() { # port pid what
    local i
    for ((i = 0; i < 300; i++)); do
        kill -0 "$2" 2>/dev/null || die "$3 exited (see its output above)"
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return; fi
        sleep 0.1
    done
    die "$3 did not open port $1"
}

say "starting the $APP_NAME app on http://127.0.0.1:$APP_PORT"
start_app &
APP_PID=$!
wait_port "$APP_PORT" "$APP_PID" "the $APP_NAME app"

export FIELDSEAL_LISTEN="${FIELDSEAL_LISTEN:-127.0.0.1:$FIELDSEAL_PORT}"
export FIELDSEAL_UPSTREAM="${FIELDSEAL_UPSTREAM:-http://127.0.0.1:$APP_PORT}"
export FIELDSEAL_ADMIN="${FIELDSEAL_ADMIN:-127.0.0.1:$ADMIN_PORT}"
say "starting fieldseal on https://${FIELDSEAL_LISTEN} ($FS)"
"$FS" run --config "$HERE/fieldseal.yaml" &
FS_PID=$!
wait_port "${FIELDSEAL_LISTEN##*:}" "$FS_PID" "fieldseal"

B="https://localhost:${FIELDSEAL_LISTEN##*:}"
cat <<MSG

fieldseal (https://${FIELDSEAL_LISTEN}) -> $APP_NAME app (http://127.0.0.1:$APP_PORT); admin http://${FIELDSEAL_ADMIN}
Try, from $HERE:

  # a user: ssn, password and card numbers arrive as fs1 tokens
  curl -s --cacert run/ca.pem $B/api/users/1 | tee run/user1.json
  # send the same body back: the app stores the real values (ask it directly, bypassing fieldseal)
  curl -s --cacert run/ca.pem -X PUT $B/api/users/1 -H 'content-type: application/json' --data @run/user1.json
  curl -s http://127.0.0.1:$APP_PORT/api/users/1
  # a tampered token never reaches the app: 400 field_rejected
  curl -s --cacert run/ca.pem -X PUT $B/api/users/1 -H 'content-type: application/json' -d '{"ssn":"fs1.k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}'
  # plaintext where a token is required: 400 field_rejected (plaintext_not_allowed)
  curl -s --cacert run/ca.pem -X PUT $B/api/users/1 -H 'content-type: application/json' -d '{"ssn":"000-00-0000"}'
  # the list: password gone, phone and card numbers masked
  curl -s --cacert run/ca.pem $B/api/users
  # open a token yourself
  $FS open --keyring run/keyring.json --context ssn "\$($PY -c 'import json; print(json.load(open("run/user1.json"))["ssn"])')"
  # what the config compiles to
  $FS check --config fieldseal.yaml
  curl -s http://${FIELDSEAL_ADMIN}/metrics | grep fieldseal_fields_total

fieldseal example ready: $B (Ctrl-C stops both)
MSG

# Wait until one of them exits (or Ctrl-C); the EXIT trap stops the other.
# (`sleep & wait`: a plain `sleep` would hold off the Ctrl-C trap until it ends; no `wait -n`,
# which macOS's bash 3.2 lacks.)
while kill -0 "$APP_PID" 2>/dev/null && kill -0 "$FS_PID" 2>/dev/null; do
    sleep 1 &
    SLEEP_PID=$!
    wait "$SLEEP_PID" 2>/dev/null || true
done
say "a process exited; stopping"
exit 1
