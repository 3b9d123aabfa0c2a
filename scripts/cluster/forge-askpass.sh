#!/bin/sh
# git's askpass on a box, for the clone cache's clone and fetch from the stand-in forge.
case "$1" in
    Username*) cat /etc/launcher/forge-user ;;
    *) printf '%s\n' "$FORGE_TOKEN" ;;
esac
