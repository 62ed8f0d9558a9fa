# Shared helpers of the scripts in this directory; source it, do not run it.

# ensure_softhsm installs SoftHSM2 from Debian's packages when its PKCS#11 library is
# missing. It needs root (or sudo) the first time only.
ensure_softhsm() {
	for lib in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
		/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so; do
		if [ -e "$lib" ] && command -v softhsm2-util >/dev/null 2>&1; then
			return 0
		fi
	done

	echo "SoftHSM2 is missing: installing the Debian package softhsm2" >&2
	local sudo=""
	if [ "$(id -u)" != 0 ]; then
		sudo=sudo
	fi
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq softhsm2 >/dev/null
}

# ensure_go fails with a clear message when the Go toolchain is missing.
ensure_go() {
	if ! command -v go >/dev/null 2>&1; then
		if [ -x /usr/local/go/bin/go ]; then
			export PATH="/usr/local/go/bin:$PATH"
		else
			echo "Go is missing: install Go 1.26 or later (https://go.dev/doc/install)" >&2
			exit 1
		fi
	fi
}

# ensure_postgres starts the local PostgreSQL cluster when nothing answers on
# 127.0.0.1:5432. It does nothing when PostgreSQL is not installed; the tests that need
# it then fail under CI and are skipped elsewhere.
ensure_postgres() {
	if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
		return 0
	fi
	if ! command -v pg_ctlcluster >/dev/null 2>&1; then
		echo "PostgreSQL is not installed: its tests will be skipped (or fail under CI)" >&2
		return 0
	fi

	local version
	version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
	if [ -z "$version" ]; then
		echo "no PostgreSQL cluster under /etc/postgresql" >&2
		return 0
	fi
	echo "starting PostgreSQL $version" >&2
	pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
	for _ in $(seq 1 30); do
		pg_isready -q -h 127.0.0.1 -p 5432 && return 0
		sleep 1
	done
	echo "PostgreSQL did not start within 30 s" >&2
}
