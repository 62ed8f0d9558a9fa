#!/bin/sh
# Prepares a SoftHSM2 token directory the way kmsd's embedded default does, for operators
# who want a token without running kmsd.
set -eu

usage() {
	cat <<'USAGE'
Usage: init-token.sh [-p] DATA_DIR [LABEL]

Creates DATA_DIR (mode 0700) with softhsm2.conf and a tokens/ directory, generates
random 24-character SO and user PINs into DATA_DIR/so-pin and DATA_DIR/user-pin
(mode 0600) unless they exist, and initialises the token LABEL (default: kms) with
softhsm2-util. An existing token with that label is left as it is.

  -p   let softhsm2-util prompt for both PINs at the terminal instead of generating
       them; no PIN files are written.
  -h   print this help.

softhsm2-util takes PINs only as arguments or from a terminal, so without -p the
PINs are visible in the process list while softhsm2-util runs. kmsd initialises
its token through PKCS#11 and avoids that.

Afterwards export SOFTHSM2_CONF=DATA_DIR/softhsm2.conf for every program that
uses the token.
USAGE
}

prompt=0
while getopts ph opt; do
	case $opt in
	p) prompt=1 ;;
	h) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	usage >&2
	exit 2
fi

command -v softhsm2-util >/dev/null 2>&1 || {
	echo "init-token.sh: softhsm2-util not found: install SoftHSM2 (apt-get install softhsm2)" >&2
	exit 1
}

data_dir=$1
label=${2:-kms}

umask 077
mkdir -p "$data_dir/tokens"
chmod 700 "$data_dir" "$data_dir/tokens"
data_dir=$(cd "$data_dir" && pwd)

conf="$data_dir/softhsm2.conf"
cat >"$conf" <<CONF
directories.tokendir = $data_dir/tokens
objectstore.backend = file
log.level = ERROR
CONF
SOFTHSM2_CONF=$conf
export SOFTHSM2_CONF

if softhsm2-util --show-slots | grep -q "Label: *$label *\$"; then
	echo "token $label already exists in $data_dir/tokens"
	exit 0
fi

if [ "$prompt" -eq 1 ]; then
	softhsm2-util --init-token --free --label "$label"
	exit 0
fi

new_pin() {
	head -c 18 /dev/urandom | base64 | tr '+/' '-_'
}

for name in so-pin user-pin; do
	if [ ! -s "$data_dir/$name" ]; then
		new_pin >"$data_dir/$name.tmp"
		mv "$data_dir/$name.tmp" "$data_dir/$name"
	fi
	chmod 600 "$data_dir/$name"
done

softhsm2-util --init-token --free --label "$label" \
	--so-pin "$(cat "$data_dir/so-pin")" --pin "$(cat "$data_dir/user-pin")" >/dev/null

echo "token $label initialised; user PIN in $data_dir/user-pin"
echo "export SOFTHSM2_CONF=$conf"
