#!/usr/bin/env bash
# System dependencies rlvr needs beyond pip: bubblewrap (bwrap), the OS sandbox that runs model-written
# code (rlvr.verifiers.code).  Installs it with apt-get when missing (as root, or through sudo); without
# it everything else works, and the code verifier refuses to run untrusted code (the tests skip).
set -u
if command -v bwrap >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=""; fi
  fi
  if [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; then
    echo "rlvr setup: installing bubblewrap (the code sandbox) with apt-get" >&2
    ($SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bubblewrap) >/dev/null 2>&1 \
      && exit 0
  fi
fi
echo "rlvr setup: bubblewrap (bwrap) is not installed and could not be installed here; install it with your" \
     "package manager (Debian/Ubuntu: apt-get install bubblewrap) to score code tasks" >&2
exit 0
