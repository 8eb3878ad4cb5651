# Boots one nodeup local node. Run by `unshare --mount --uts --pid --fork` as PID 1 of the node's
# own PID namespace, inside its own mount and UTS namespaces (mount propagation private, so nothing
# here is seen by the host). Every value comes in as a positional argument; nothing is interpolated
# into this text.
#   $1 node directory (holds upper/, work/, root/)   $2 hostname
#   $3 state directory to hide from the node         $4 seconds to wait before sshd listens
#   $5 with a network namespace of its own (unshare --net): the address sshd listens on, which the
#      provider puts on the node's link once this script has started; empty otherwise
set -eu
node_dir=$1
node_name=$2
state_dir=$3
listen_delay=$4
own_address=$5
root=$node_dir/root

# Our pid as the host sees it (/proc is still the host's here): the provider kills the node by it.
read -r host_pid _ </proc/self/stat
printf '%s\n' "$host_pid" >"$node_dir/init.pid"

# The node's filesystem: the host's root, read-only underneath, every write going to upper/.
mount -t overlay overlay -o "lowerdir=/,upperdir=$node_dir/upper,workdir=$node_dir/work" "$root"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount --bind "$root/proc/sys" "$root/proc/sys"
mount -o remount,bind,ro "$root/proc/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/tmp"
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$root/run"
# Every node's state (its host keys among it) stays out of sight.
if [ -d "$root$state_dir" ]; then
	mount -t tmpfs -o mode=0700,size=64k tmpfs "$root$state_dir"
fi
mkdir -m 0755 "$root/run/sshd"

# A boot id of this boot's own, as a reboot changes it.
cat /proc/sys/kernel/random/uuid >"$root/run/boot_id"
mount --bind "$root/run/boot_id" "$root/proc/sys/kernel/random/boot_id"

hostname "$node_name"

# What cloud-init does with a user-data script given at (re)install: run it once, at first boot.
user_data=/var/lib/cloud/instance/user-data.txt
if [ -f "$root$user_data" ] && [ ! -e "$root$user_data.done" ]; then
	chroot "$root" /bin/sh "$user_data" >"$root/var/log/cloud-init-output.log" 2>&1 || true
	touch "$root$user_data.done"
fi

if [ -n "$own_address" ]; then
	ip link set lo up
	# As a machine waits for its network before sshd: up to 10 s, then sshd says what is wrong.
	tries=0
	until ip -o -4 addr show | grep -qF " $own_address/"; do
		tries=$((tries + 1))
		[ "$tries" -ge 1000 ] && break
		sleep 0.01
	done
fi

if [ "$listen_delay" != 0 ]; then
	sleep "$listen_delay"
fi

# PID 1 from here on, inside the node's root: runs sshd, and boots again when the node's own
# reboot asks (SIGUSR1, from the node's reboot, shutdown -r and systemctl reboot), or ends the
# node when its halt or poweroff asks (SIGUSR2). A reboot ends every other process of the node,
# gives it a fresh /tmp, /run and /dev/shm and a new boot id, as a machine's reboot does.
boot_loop='
set -u
delay=$1
want=
trap "want=reboot" USR1
trap "want=halt" USR2
while :; do
	/usr/sbin/sshd -D -e -f /etc/ssh/sshd_config &
	sshd=$!
	while [ -z "$want" ] && kill -0 "$sshd" 2>/dev/null; do
		wait "$sshd" || true
	done
	[ -n "$want" ] || exit 1
	kill -KILL -1 2>/dev/null || true
	wait || true
	[ "$want" = halt ] && exit 0
	want=
	umount /proc/sys/kernel/random/boot_id
	for dir in /tmp /run /dev/shm; do
		umount -l "$dir"
	done
	mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
	mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
	mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
	mkdir -m 0755 /run/sshd
	cat /proc/sys/kernel/random/uuid >/run/boot_id
	mount --bind /run/boot_id /proc/sys/kernel/random/boot_id
	if [ "$delay" != 0 ]; then
		sleep "$delay"
	fi
done
'
exec chroot "$root" /bin/sh -c "$boot_loop" node-boot "$listen_delay"
