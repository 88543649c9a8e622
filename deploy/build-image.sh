#!/usr/bin/env bash
# Builds the `magnetar` container image (default tag magnetar:latest) from
# scratch: the magnetar binary, etcd and etcdctl from Debian's packages, the
# shared libraries they link and nothing else (no shell, no package manager).
# No registry is needed: the image starts FROM scratch.
#
#   deploy/build-image.sh [--release] [--binary PATH] [--tag NAME]
#
#   --release      build the binary with the release profile (a second
#                  RocksDB build, ~20 min the first time) instead of the
#                  workspace's dev profile (dependencies at opt-level 3,
#                  Magnetar's own crates at 1: the build the tests and
#                  benchmarks use)
#   --binary PATH  use this magnetar binary instead of building one
#   --tag NAME     image name [default: magnetar:latest]
#
# The image runs as user `magnetar` (uid/gid 10001); /data and /secrets are
# its writable directories (mount volumes there). Its default command is
# `magnetar standalone --data-dir /data`; its healthcheck runs
# `magnetar health`, which probes $MAGNETAR_HEALTH_URL
# (default http://127.0.0.1:8080/health: a broker or standalone).
set -euo pipefail
cd "$(dirname "$0")/.."

profile=dev
binary=""
tag="magnetar:latest"
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release; shift ;;
    --binary) binary="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    *) echo "build-image.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

command -v docker >/dev/null || { echo "build-image.sh: docker is not installed" >&2; exit 1; }
if [ -z "$binary" ]; then
  source scripts/setup.sh >/dev/null
  target="${CARGO_TARGET_DIR:-$PWD/target}"
  if [ "$profile" = release ]; then
    cargo build --release --bin magnetar
    binary="$target/release/magnetar"
  else
    cargo build --bin magnetar
    binary="$target/debug/magnetar"
  fi
fi
for tool in etcd etcdctl; do
  command -v "$tool" >/dev/null || {
    echo "build-image.sh: $tool is missing (apt-get install etcd-server etcd-client)" >&2
    exit 1
  }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root/usr/bin" "$root/etc" "$root/tmp" "$work/owned/data" "$work/owned/secrets"
chmod 1777 "$root/tmp"

# Symbols and debug info are most of a binary's size; the image needs neither.
strip --strip-unneeded -o "$root/usr/bin/magnetar" "$binary"
cp "$(command -v etcd)" "$(command -v etcdctl)" "$root/usr/bin/"

# Every shared library a binary loads (and the loader), at the path it is
# loaded from, so the dynamic linker finds them as on the build host.
copy_libraries() {
  ldd "$1" | awk '/=> \// { print $3 } /^[[:space:]]*\// { print $1 }' | while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}
for bin in "$root"/usr/bin/*; do copy_libraries "$bin"; done

cat > "$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
magnetar:x:10001:10001:magnetar:/data:/usr/sbin/nologin
EOF
cat > "$root/etc/group" <<'EOF'
root:x:0:
magnetar:x:10001:
EOF
echo 'hosts: files dns' > "$root/etc/nsswitch.conf"

version=$("$binary" --version | awk '{ print $2 }')
cat > "$work/Dockerfile" <<EOF
FROM scratch
COPY root/ /
COPY --chown=10001:10001 owned/ /
LABEL org.opencontainers.image.title="magnetar" \\
      org.opencontainers.image.description="Magnetar broker, bookie, standalone and tools; etcd and etcdctl" \\
      org.opencontainers.image.version="$version"
USER 10001:10001
WORKDIR /data
EXPOSE 6650 8080
HEALTHCHECK --interval=5s --timeout=4s --start-period=30s --retries=3 \\
    CMD ["/usr/bin/magnetar", "health"]
ENTRYPOINT ["/usr/bin/magnetar"]
CMD ["standalone", "--data-dir", "/data"]
EOF

# The legacy builder needs nothing but the engine (no buildx plugin here).
DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$work" >/dev/null 2>"$work/build.err" || {
  cat "$work/build.err" >&2
  exit 1
}
size=$(docker image inspect -f '{{.Size}}' "$tag")
echo "built $tag: $((size / 1024 / 1024)) MiB (magnetar $version, $profile profile)"
