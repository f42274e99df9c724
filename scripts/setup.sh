#!/usr/bin/env bash
# Installs what building Flotilla needs on a fresh Debian machine and is a no-op when it is
# all there: libclang and a C++ compiler (the rocksdb crate compiles RocksDB and generates
# its bindings with bindgen), protoc and etcd (the etcd baseline's client and server), and
# a Rust toolchain check.
set -euo pipefail

need=()
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
dpkg -s clang >/dev/null 2>&1 || need+=(clang)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v make >/dev/null 2>&1 || need+=(make)
# protoc: the etcd client of flotilla-load (the etcd baseline) compiles its protos with it.
command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
# etcd: the baseline the load generator's etcd backend is tested against.
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi
