#!/usr/bin/env bash
# Installs the system tools amibundle's demo and tests use, when missing:
# GNU tar, gzip, openssl (independent cross-checks of our streams),
# e2fsprogs (sample file systems), fdisk/gdisk/mount (bundle-vol's partition
# tables and loop devices), rsync (cross-check of bundle-vol's copy rules),
# qemu-img, bzip2, xz, zstd (images of every format bundle-image reads),
# jq (the README's examples, which the tests run), and for the boot tests
# (tests/boot): GRUB for BIOS and UEFI, dosfstools and mtools (EFI system
# partitions without mounting), qemu with SeaBIOS and OVMF, and a static
# busybox for the test root. Uses apt when available; otherwise it only
# reports what is missing.
set -euo pipefail

declare -A package_of=(
  [tar]=tar [gzip]=gzip [gunzip]=gzip [openssl]=openssl
  [mke2fs]=e2fsprogs [debugfs]=e2fsprogs [e2fsck]=e2fsprogs
  [setpriv]=util-linux [zstd]=zstd
  [sfdisk]=fdisk [sgdisk]=gdisk [losetup]=mount [rsync]=rsync
  [qemu-img]=qemu-utils [bzip2]=bzip2 [xz]=xz-utils [jq]=jq
  [grub-mkimage]=grub-common [grub-install]=grub2-common
  [mkfs.vfat]=dosfstools [mcopy]=mtools [mmd]=mtools
  [qemu-system-x86_64]=qemu-system-x86
)
# What no command stands for: GRUB's module folders and the UEFI firmware.
declare -A package_of_file=(
  [/usr/lib/grub/i386-pc/boot.img]=grub-pc-bin
  [/usr/lib/grub/x86_64-efi/kernel.img]=grub-efi-amd64-bin
  [/usr/share/OVMF/OVMF_CODE.fd]=ovmf
)
missing=()
for tool in "${!package_of[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/sbin:/usr/sbin" command -v "$tool" >/dev/null 2>&1 \
    || missing+=("${package_of[$tool]}")
done
for file in "${!package_of_file[@]}"; do
  [ -e "$file" ] || missing+=("${package_of_file[$file]}")
done
# The boot tests' root runs busybox without libraries: it must be the static build.
if command -v dpkg-query >/dev/null 2>&1; then
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' \
    || missing+=(busybox-static)
else
  command -v busybox >/dev/null 2>&1 || missing+=(busybox-static)
fi
[ ${#missing[@]} -eq 0 ] && exit 0
packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing system tools: $packages"
  apt-get update -qq >/dev/null
  # Without recommends: qemu's would bring a whole desktop (GTK, SDL, audio).
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >/dev/null
else
  echo "missing system tools (install them with your package manager): $packages" >&2
  exit 1
fi
