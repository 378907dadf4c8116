# Shared bash helpers for scripts/test and scripts/try. Source it; do not run it.

# Debian packages the build, the tests and the demo need.
IMAPFS_PACKAGES=(
	gcc clang meson ninja-build pkg-config
	libfuse3-dev fuse3 libssl-dev libsqlite3-dev libcmocka-dev
	dovecot-core dovecot-imapd openssl python3 attr npm
)

imapfs_log() {
	printf '%s: %s\n' "${0##*/}" "$*" >&2
}

imapfs_die() {
	imapfs_log "$*"
	exit 1
}

# Install the packages of IMAPFS_PACKAGES that are missing (apt-get update
# once first, only when something is missing). Never asks anything.
imapfs_install_missing() {
	local p missing=() sudo=()
	for p in "${IMAPFS_PACKAGES[@]}"; do
		# npm and python3 may come from elsewhere (nodesource, pyenv): a
		# working command is enough; Debian's npm conflicts with nodesource.
		case $p in
		npm | python3) ! command -v "$p" >/dev/null || continue ;;
		esac
		if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
			missing+=("$p")
		fi
	done
	((${#missing[@]})) || return 0
	if ((EUID != 0)); then
		command -v sudo >/dev/null || imapfs_die "missing packages (${missing[*]}) and not root"
		sudo=(sudo -n)
	fi
	imapfs_log "installing ${missing[*]}"
	# Installing dovecot-core would start the system Dovecot; keep it stopped
	# with the standard policy-rc.d veto (only if none is in place).
	local policy=/usr/sbin/policy-rc.d added_policy=
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
		"${sudo[@]}" chmod 755 "$policy"
		added_policy=1
	fi
	local rc=0
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null || rc=$?
	if ((rc == 0)); then
		"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
			--no-install-recommends "${missing[@]}" </dev/null || rc=$?
	fi
	[[ -z $added_policy ]] || "${sudo[@]}" rm -f "$policy"
	((rc == 0)) || imapfs_die "apt-get failed (exit $rc)"
}

# FUSE needs /dev/fuse; load the module when the node is missing.
imapfs_check_fuse() {
	if [[ ! -e /dev/fuse ]]; then
		modprobe fuse 2>/dev/null || true
	fi
	[[ -e /dev/fuse ]] || imapfs_die "/dev/fuse is missing (modprobe fuse failed; in a container, pass --device /dev/fuse --cap-add SYS_ADMIN)"
	command -v fusermount3 >/dev/null || imapfs_die "fusermount3 is missing (package fuse3)"
}

# Configure (or reconfigure) a meson build folder: imapfs_meson_setup DIR [OPTIONS...]
imapfs_meson_setup() {
	local dir=$1
	shift
	if [[ -f $dir/meson-private/coredata.dat ]]; then
		meson setup --reconfigure "$dir" "$@" </dev/null ||
			meson setup --wipe "$dir" "$@" </dev/null
	else
		rm -rf "$dir"
		meson setup "$dir" "$@" </dev/null
	fi
}

# Stop what a run left behind under ROOT: FUSE mounts, imapfs daemons and
# private Dovecot instances (found by their master.pid files).
imapfs_cleanup_under() {
	local root=$1 mnt pidfile pid dir p
	[[ -n $root && -d $root ]] || return 0
	root=$(realpath "$root")
	# FUSE mounts below root (mountinfo field 5; octal escapes are rare here)
	while read -r mnt; do
		fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
	done < <(awk -v r="$root/" '$0 ~ / - fuse/ && index($5, r) == 1 { print $5 }' /proc/self/mountinfo)
	# imapfs daemons whose command line names a path below root
	for p in /proc/[0-9]*; do
		[[ $(cat "$p/comm" 2>/dev/null) == imapfs ]] || continue
		if tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -q "^$root/\|=$root/\|cat $root/"; then
			kill -9 "${p#/proc/}" 2>/dev/null || true
		fi
	done
	# Dovecot instances
	while IFS= read -r pidfile; do
		dir=${pidfile%/run/master.pid}
		if [[ -f $dir/env ]]; then
			"${IMAPFS_SOURCE_DIR:-.}/scripts/dovecot-instance" stop "$dir" >/dev/null 2>&1 || true
		fi
		pid=$(cat "$pidfile" 2>/dev/null) || continue
		if [[ $pid =~ ^[0-9]+$ ]] && grep -q dovecot "/proc/$pid/comm" 2>/dev/null; then
			kill -9 -- "-$pid" 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
		fi
	done < <(find "$root" -name master.pid -path '*/run/master.pid' 2>/dev/null)
}
