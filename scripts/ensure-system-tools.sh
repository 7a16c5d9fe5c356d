#!/usr/bin/env bash
# Installs the system tools amibundle's demo and tests use, when missing:
# GNU tar, gzip, openssl (independent cross-checks of our streams),
# e2fsprogs (sample file systems), fdisk/gdisk/mount (bundle-vol's partition
# tables and loop devices), rsync (cross-check of bundle-vol's copy rules),
# qemu-img, bzip2, xz, zstd (images of every format bundle-image reads) and
# jq (the README's examples, which the tests run). Uses apt when available;
# otherwise it only reports what is missing.
set -euo pipefail

declare -A package_of=(
  [tar]=tar [gzip]=gzip [gunzip]=gzip [openssl]=openssl
  [mke2fs]=e2fsprogs [debugfs]=e2fsprogs [e2fsck]=e2fsprogs
  [setpriv]=util-linux [zstd]=zstd
  [sfdisk]=fdisk [sgdisk]=gdisk [losetup]=mount [rsync]=rsync
  [qemu-img]=qemu-utils [bzip2]=bzip2 [xz]=xz-utils [jq]=jq
)
missing=()
for tool in "${!package_of[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/sbin:/usr/sbin" command -v "$tool" >/dev/null 2>&1 \
    || missing+=("${package_of[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing system tools: $packages"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $packages >/dev/null
else
  echo "missing system tools (install them with your package manager): $packages" >&2
  exit 1
fi
