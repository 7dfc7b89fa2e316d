#!/usr/bin/env bash
# System packages the embedded default needs: Fashion-MNIST (offline data) and tcmalloc (CPU speed).
# Installed on Debian as root; elsewhere we only say what is missing.
set -u
pkgs=(dataset-fashion-mnist libtcmalloc-minimal4)
missing=()
if command -v dpkg >/dev/null 2>&1; then
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
else
  missing=("${pkgs[@]}")
fi
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "isokd: installing ${missing[*]} with apt-get"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
  echo "isokd: note: not Debian as root, so not installing ${missing[*]}." \
       "Fashion-MNIST can instead go under \$ISOKD_DATA/FashionMNIST/raw/ (torchvision layout);" \
       "without tcmalloc CPU training is slower."
fi
