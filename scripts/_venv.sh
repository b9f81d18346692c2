# Sourced by serve.sh and test.sh: make a virtualenv at $1, even on a Debian whose python3 lacks
# the venv module (python3-venv is then installed when we are root).
make_venv() {
    local dir=$1
    if [ -x "$dir/bin/python" ]; then return 0; fi
    if ! python3 -m venv "$dir" 2>/dev/null; then
        rm -rf "$dir"
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
            python3 -m venv "$dir"
        else
            echo "python3 cannot make a virtualenv: install python3-venv (apt-get install python3-venv)" >&2
            return 1
        fi
    fi
    "$dir/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
}
