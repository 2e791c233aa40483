#!/usr/bin/env bash
# Builds the release binary for the container image into dist/fieldseal (see docs/docker.md).
#
# Default: a fully static musl binary (the host triple with -gnu replaced by -musl, e.g.
# x86_64-unknown-linux-musl), which runs on gcr.io/distroless/static-debian12 — the same kind of
# binary the Dockerfile's `build` stage produces. Needs the rustup target (added here if missing)
# and musl-gcc (Debian: musl-tools) for the C parts: aws-lc (TLS and crypto) and mimalloc.
#
#   scripts/build-static.sh           # static musl; fails with instructions if it cannot
#   scripts/build-static.sh --glibc   # plain release build for this host (dynamic glibc); package
#                                     # it on gcr.io/distroless/cc-debian12 (the script says how)
#
# Then: docker build --target prebuilt -t fieldseal .
# CARGO_TARGET_DIR is honoured (default: target/), e.g. to keep this build out of the way of a
# concurrent `cargo test` that holds the lock on target/.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=musl
case "${1:-}" in
  "") ;;
  --glibc) mode=glibc ;;
  -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--glibc]" >&2; exit 2 ;;
esac

host="$(rustc -vV | sed -n 's/^host: //p')"
target_dir="${CARGO_TARGET_DIR:-target}"
# Same as the Dockerfile: drop the debug info of std but keep symbol names for backtraces.
export CARGO_PROFILE_RELEASE_STRIP=debuginfo

if [ "$mode" = musl ]; then
  case "$host" in
    *-linux-gnu) target="${host%-gnu}-musl" ;;
    *) echo "build-static: host $host is not a *-linux-gnu triple; use --glibc or build in Docker" >&2; exit 1 ;;
  esac
  if ! rustup target list --installed | grep -qx "$target"; then
    echo "== rustup target add $target"
    if ! rustup target add "$target"; then
      echo "build-static: cannot install the Rust target $target (offline?)." >&2
      echo "  Either build the image with Docker (docker build -t fieldseal .), or" >&2
      echo "  build a glibc binary: $0 --glibc" >&2
      exit 1
    fi
  fi
  if ! command -v musl-gcc >/dev/null; then
    echo "build-static: musl-gcc not found; aws-lc and mimalloc are C and need it." >&2
    echo "  Debian/Ubuntu: apt-get install musl-tools   (or: $0 --glibc)" >&2
    exit 1
  fi
  # The C compiler cc-rs uses for the target (as in the Dockerfile); build scripts keep the host gcc.
  export TARGET_CC=musl-gcc
  echo "== cargo build --release --locked --target $target --bin fieldseal"
  cargo build --release --locked --target "$target" --bin fieldseal
  built="$target_dir/$target/release/fieldseal"
else
  target="$host"
  echo "== cargo build --release --locked --bin fieldseal (dynamic glibc, host $host)"
  cargo build --release --locked --bin fieldseal
  built="$target_dir/release/fieldseal"
fi

mkdir -p dist
# Replace, not overwrite in place: a running dist/fieldseal would make cp fail (ETXTBSY).
cp "$built" dist/fieldseal.tmp
mv -f dist/fieldseal.tmp dist/fieldseal

echo "== built dist/fieldseal ($mode, $target)"
file dist/fieldseal
ls -l dist/fieldseal
dist/fieldseal --version

desc="$(file -b dist/fieldseal)"
if [ "$mode" = musl ]; then
  case "$desc" in
    *"static-pie linked"* | *"statically linked"*) ;;
    *) echo "build-static: expected a static binary, got: $desc" >&2; exit 1 ;;
  esac
  echo "Static binary: runs on gcr.io/distroless/static-debian12 (the Dockerfile default)."
  echo "Package it:    docker build --target prebuilt -t fieldseal ."
else
  glibc="$(ldd --version 2>/dev/null | sed -n '1s/.* //p')"
  echo "Dynamic binary (glibc ${glibc:-?} here): needs a glibc base no older than this host's;"
  echo "gcr.io/distroless/cc-debian12 has glibc 2.36 (Debian 12). Package it:"
  echo "  docker build --target prebuilt --build-arg RUNTIME_BASE=gcr.io/distroless/cc-debian12:nonroot -t fieldseal ."
fi
