# Sourced by ./knd and ./run-tests: makes a fresh Debian machine (python3, root) ready.
# Installs the few system packages knd needs, then the project into .venv; both steps
# are skipped when already done, so the common path costs a few milliseconds.
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

knd_apt_install() {
    if [ "$(id -u)" != 0 ]; then
        echo "knd: missing system packages ($*); run as root or install them" >&2
        exit 1
    fi
    echo "knd: installing system packages: $*" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 && apt-get install -y -qq "$@" >/dev/null
}

need=()
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v ping >/dev/null 2>&1 || need+=(iputils-ping)
if [ -n "${knd_for_tests:-}" ]; then  # set by ./run-tests: what only the tests use
    # the DHCP tests' server (the binary alone, no system service); in sbin, which a
    # user's PATH may lack
    PATH="$PATH:/usr/sbin:/sbin" command -v dnsmasq >/dev/null 2>&1 || need+=(dnsmasq-base)
    # the tests compare with ethtool -k (in /usr/sbin: not on every user's PATH)
    command -v ethtool >/dev/null 2>&1 || [ -x /usr/sbin/ethtool ] || need+=(ethtool)
fi
[ ${#need[@]} -eq 0 ] || knd_apt_install "${need[@]}"

stamp="$here/.venv/.knd-installed"
want="$(cat "$here/pyproject.toml" "$here/setup.py" "$here"/protos/*.proto \
    "$here/scripts/test-tools.txt" 2>/dev/null | sha256sum | cut -c1-16)"
if [ ! -x "$here/.venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    # Someone else's checkout (root's, typically): building into it would fail halfway
    # through pip with a page of permission errors.
    target="$here/.venv"
    [ -e "$target" ] || target="$here"
    if [ ! -w "$target" ]; then
        owner="$(stat -c %U "$target")"
        [ "$owner" = root ] || owner="$owner or root"
        echo "knd: $here/.venv is missing or out of date, and user" \
            "$(id -un 2>/dev/null || id -u) cannot write $target; run ./knd once as" \
            "$owner to set it up" >&2
        exit 1
    fi
    echo "knd: setting up $here/.venv" >&2
    [ -x "$here/.venv/bin/python" ] || python3 -m venv "$here/.venv"
    "$here/.venv/bin/python" -m pip install -q --upgrade pip >&2
    "$here/.venv/bin/python" -m pip install -q -e "$here[test]" >&2
    "$here/.venv/bin/python" -m pip install -q --no-deps -r "$here/scripts/test-tools.txt" >&2
    echo "$want" > "$stamp"
fi
