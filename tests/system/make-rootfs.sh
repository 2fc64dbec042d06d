#!/usr/bin/env bash
# Makes the Debian 12 (bookworm) root file system that the system test boots
# with systemd-nspawn: minbase, systemd, D-Bus, the runtime libraries of the
# installed daemon, GStreamer's base and good plugins, mosquitto and its
# clients. Does nothing when ROOT already holds a finished one made from the
# same package list (ROOT/.inspectd-packages; it is built in ROOT.new and
# renamed to ROOT when done), so a new runtime library rebuilds it.
# The test boots copies of it and never writes to it.
# Usage: make-rootfs.sh ROOT   (as root; needs debootstrap, systemd-nspawn and
# the Debian mirror named in /etc/apt/sources.list*; takes 2-3 minutes)
set -euo pipefail
root=${1:?usage: make-rootfs.sh ROOT}

mirror=$(grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null \
           | head -1 | tr -d ' ' || true)
mirror=${mirror:-http://deb.debian.org/debian}

runtime="libglib2.0-0 libjson-glib-1.0-0 libopenblas0-pthread libpng16-16 libjpeg62-turbo
  libgstreamer1.0-0 libgstreamer-plugins-base1.0-0 libv4l-0 libaravis-0.8-0 libmosquitto1
  libsystemd0 libusb-1.0-0 libssl3 libsoup-3.0-0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  mosquitto mosquitto-clients procps"

# One line: the list goes into an `sh -c` string, where a newline would end
# the apt-get command.
# shellcheck disable=SC2086
runtime=$(echo $runtime)
[ -x "$root/lib/systemd/systemd" ] && [ -x "$root/usr/bin/mosquitto_sub" ] &&
  [ "$(cat "$root/.inspectd-packages" 2>/dev/null)" = "$runtime" ] && exit 0

tmp="$root.new"
rm -rf "$tmp"
mkdir -p "$(dirname "$root")"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$tmp" "$mirror" \
  >"$root.debootstrap.log" 2>&1 || { tail -20 "$root.debootstrap.log"; exit 1; }
# GStreamer in --include fails on dconf: install the rest from inside.
# shellcheck disable=SC2086
systemd-nspawn -q --register=no --keep-unit -D "$tmp" --pipe sh -c \
  "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $runtime && apt-get clean" \
  >>"$root.debootstrap.log" 2>&1 || { tail -20 "$root.debootstrap.log"; exit 1; }
echo "$runtime" >"$tmp/.inspectd-packages"
rm -rf "$root"
mv "$tmp" "$root"
