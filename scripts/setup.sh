#!/usr/bin/env bash
# Installs what building and testing Magnetar needs on a fresh Debian machine:
# etcd (server + etcdctl), protoc with its well-known types, clang/libclang (RocksDB bindings),
# pkg-config and libssl-dev (the `pulsar` client crate links OpenSSL), and
# Prometheus (the observability test runs every dashboard query against it).
# Safe to run again: it installs only what is missing. Source it to also get
# CARGO_TARGET_DIR pointed at a cache outside the clone.
set -euo pipefail

need=()
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# protoc's well-known types (descriptor.proto, struct.proto), imported by etcd-client's protos.
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v clang >/dev/null 2>&1 || need+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
pkg-config --exists openssl 2>/dev/null || need+=(libssl-dev)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# RocksDB compiles from source (~20 min on 2 cores): keep build output in a
# cache outside the clone so later runs on this machine are incremental.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  cache="${XDG_CACHE_HOME:-$HOME/.cache}/magnetar-target"
  if mkdir -p "$cache" 2>/dev/null; then
    export CARGO_TARGET_DIR="$cache"
  fi
fi
echo "setup: ok (CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target})"
