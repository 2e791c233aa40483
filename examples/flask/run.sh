#!/usr/bin/env bash
# Runs the example app and fieldseal in front of it, from a fresh checkout:
#   ./run.sh          # then try the curl commands it prints; Ctrl-C stops both
#
# Environment:
#   APP_PORT=8000 FIELDSEAL_PORT=8443 ADMIN_PORT=9901   ports (all on 127.0.0.1)
#   FIELDSEAL=/path/to/fieldseal   the binary (default: target/release, target/debug, then PATH;
#                                  built with `cargo build --release` if none is found)
#   PYTHON=/path/to/python         use this interpreter instead of a venv in run/venv
#   SKIP_INSTALL=1                 do not pip install requirements.txt
# Generated files (certificates, keyring, venv) go to run/, which is never overwritten
# once it exists (delete it to start over).
set -euo pipefail

APP_NAME="Flask"
start_app() {
    exec "$PY" -m flask --app app run --host 127.0.0.1 --port "$APP_PORT"
}

# The rest (binary, venv, certificates, keyring, start/stop) is shared by both examples.
source "$(dirname "${BASH_SOURCE[0]}")/../run-example.sh"
