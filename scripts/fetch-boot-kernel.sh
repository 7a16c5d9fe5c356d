#!/usr/bin/env bash
# Puts Debian's cloud kernel (its vmlinuz only) into .cache/boot-kernel/ for
# the boot tests (tests/boot), once: `apt-get download` of the package that
# linux-image-cloud-amd64 points to and `dpkg-deb -x` into a temporary folder,
# never into this machine's /boot. The tests themselves never download.
# The cloud kernel has NVMe and ext4 built in, so it boots without an initrd.
set -euo pipefail
cd "$(dirname "$0")/.."
cache=${AMIBUNDLE_BOOT_KERNEL_CACHE:-.cache/boot-kernel}
meta=linux-image-cloud-amd64

compgen -G "$cache/vmlinuz-*" >/dev/null && exit 0
for tool in apt-get apt-cache dpkg-deb; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$tool is needed to fetch the boot tests' kernel" >&2; exit 1; }
done
kernel_package() {
  apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }'
}
package=$(kernel_package)
if [ -z "$package" ] && [ "$(id -u)" = 0 ]; then
  apt-get update -qq >/dev/null
  package=$(kernel_package)
fi
[ -n "$package" ] || { echo "apt knows no $meta (run apt-get update)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# As root, apt downloads as its sandbox user, which cannot write a private
# temporary folder; downloading as root into it is what we mean.
sandbox=()
[ "$(id -u)" = 0 ] && sandbox=(-o APT::Sandbox::User=root)
download() { (cd "$work" && apt-get download -qq "${sandbox[@]}" "$package" >/dev/null); }
# Stale package lists name a version the mirror no longer has: refresh once.
if ! download; then
  [ "$(id -u)" = 0 ] || { echo "cannot download $package (run apt-get update)" >&2; exit 1; }
  apt-get update -qq >/dev/null
  package=$(kernel_package)
  download
fi
dpkg-deb -x "$work"/*.deb "$work/root"
mkdir -p "$cache"
install -m 0644 "$work"/root/boot/vmlinuz-* "$cache/"
echo "boot tests' kernel: $(cd "$cache" && ls vmlinuz-*)"
