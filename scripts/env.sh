# Sourced by the other scripts: makes .venv (once) and installs the project with its dev and
# redis extras into it (again whenever pyproject.toml changes), then puts it first on PATH.
# Needs only python3 and pip; uses apt-get for python3-venv if this Python lacks venv.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${RESILIENCE_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv "$venv" 2>/dev/null; then
        echo "python3 -m venv failed; installing python3-venv with apt-get" >&2
        rm -rf "$venv"
        ${SUDO:-} apt-get update -qq && ${SUDO:-} apt-get install -y -qq python3-venv >/dev/null
        python3 -m venv "$venv"
    fi
fi
stamp="$venv/.installed"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
    echo "installing resilience and its dev dependencies into $venv ..." >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[dev,redis]"
    touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
