#!/bin/sh
# Initialises the app once: exits 3 ("nothing to do") when its settings are already in place.
set -eu
if grep -q '^APP_ENV=' "$1"; then
	echo "already set up: $1"
	exit 3
fi
echo "APP_ENV=development" >>"$1"
