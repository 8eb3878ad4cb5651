#!/bin/sh
# Greets whoever the arguments name, from the node, and leaves a note of it in the user's home.
set -eu
for who in "$@"; do
	echo "hello, $who, from $(hostname) as $(id -un)"
done | tee "$HOME/hello.txt"
