#!/usr/bin/env python3
"""Mounting from fstab, as sshfs users do: a `fuse.imapfs` line with
noauto,_netdev,nofail,x-systemd.* options and a password_command with an
escaped space, mounted with `mount -T FSTAB MOUNTPOINT` (mount(8) and
mount.fuse3, which runs `imapfs` from PATH in the background). The root
lists the server's mailboxes (LIST by imaplib), a message reads the
server's bytes, the password is in no daemon's argv or environment, and
`umount` ends the daemon. A wrong port fails the mount with the reason on
stderr. Needs root (mount(8)); skipped otherwise."""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Dovecot, build_dir, check, free_port, is_mounted, skip, tmp_root  # noqa: E402
from test_mount_lib import eml_uids, mailbox_path, read_file, server_bodies  # noqa: E402
from test_mount_lib import server_mailboxes  # noqa: E402


def fstab_escape(s):
    """fstab's own escaping of a field: octal for space, tab, backslash, #."""
    return "".join("\\%03o" % ord(ch) if ch in " \t\\#\n" else ch for ch in s)


def daemon_pids(mountpoint):
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"imapfs" and mountpoint.encode() in argv:
            pids.append(int(d))
    return pids


def proc_bytes(pid, what):
    try:
        with open("/proc/%d/%s" % (pid, what), "rb") as f:
            return f.read()
    except OSError:
        return b""


def mount_type(mountpoint):
    """The filesystem type mountinfo shows at mountpoint, or None."""
    with open("/proc/self/mountinfo") as f:
        for ln in f:
            left, _, right = ln.partition(" - ")
            fields = left.split()
            if len(fields) >= 5 and fields[4] == fstab_escape(mountpoint):
                return right.split()[0]
    return None


def mount(fstab, mountpoint, env):
    return subprocess.run(["mount", "-T", fstab, mountpoint], env=env,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60)


def main():
    if os.geteuid() != 0:
        skip("mount(8) from an fstab needs root")
    if not shutil.which("mount.fuse3") and not os.path.exists("/usr/sbin/mount.fuse3") \
            and not os.path.exists("/sbin/mount.fuse3"):
        skip("no mount.fuse3 (package fuse3)")
    binary = os.path.join(build_dir(), "fs", "imapfs")
    tmp = tempfile.mkdtemp(prefix="fstab.", dir=tmp_root())
    mnt = os.path.join(tmp, "mail box")  # a space in the path too
    bindir = os.path.join(tmp, "bin")
    os.mkdir(mnt)
    os.mkdir(bindir)
    os.symlink(binary, os.path.join(bindir, "imapfs"))
    env = dict(os.environ, PATH=bindir + ":" + os.environ.get("PATH", "/usr/bin:/bin"))
    env.pop("IMAPFS_PASSWORD", None)
    try:
        with Dovecot() as dc:
            c = dc.client()
            typ, _ = c.create("Fstab")
            check(typ == "OK", "server: CREATE Fstab")
            msg = (b"From: fstab@example.org\r\nSubject: from fstab\r\n"
                   b"Message-ID: <fstab-1@example.org>\r\n\r\nmounted by mount(8)\r\n")
            typ, _ = c.append("Fstab", None, None, msg)
            check(typ == "OK", "server: APPEND to Fstab")

            def line(port):
                opts = ",".join([
                    "noauto", "_netdev", "nofail", "x-systemd.automount",
                    "x-systemd.idle-timeout=60",
                    "port=%d" % port,
                    "cafile=%s" % dc.cafile,
                    "password_command=cat %s" % dc.password_file,
                    "cache=%s" % os.path.join(tmp, "cache.db"),
                ])
                return "%s@%s %s fuse.imapfs %s 0 0\n" % (
                    dc.user, dc.host, fstab_escape(mnt), fstab_escape(opts))

            fstab = os.path.join(tmp, "fstab")
            with open(fstab, "w") as f:
                f.write("# test fstab\n" + line(dc.imaps_port))
            print("fstab:", open(fstab).read().strip().splitlines()[-1])
            r = mount(fstab, mnt, env)
            print("mount: exit %d, stderr %r" % (r.returncode, r.stderr.strip()))
            check(r.returncode == 0, "mount -T fstab mounts (exit 0)")
            check(is_mounted(mnt), "the mount point is a FUSE mount")
            check(mount_type(mnt) == "fuse.imapfs", "mountinfo shows type fuse.imapfs")

            pids = daemon_pids(mnt)
            check(len(pids) == 1, "one imapfs daemon runs for it, in the background")
            pw = dc.password.encode()
            check(pw not in proc_bytes(pids[0], "cmdline"), "the password is not in its argv")
            check(pw not in proc_bytes(pids[0], "environ"), "nor in its environment")
            check(b"x-systemd" not in proc_bytes(pids[0], "cmdline") and
                  b"_netdev" not in proc_bytes(pids[0], "cmdline"),
                  "mount.fuse3 kept the mount(8)-only options from the daemon")

            shown = set(os.listdir(mnt))
            expect = {mailbox_path(name, delim).split("/")[0]
                      for name, delim, _ in server_mailboxes(c)}
            print("root:", sorted(shown), "server:", sorted(expect))
            check(expect <= shown and "Fstab" in shown, "the root lists the server's mailboxes")
            uids = eml_uids(os.path.join(mnt, "Fstab"))
            check(len(uids) == 1, "Fstab lists its one message")
            bodies = server_bodies(c, "Fstab")
            check(read_file(os.path.join(mnt, "Fstab", "%d.eml" % uids[0])) == bodies[uids[0]],
                  "the message reads the server's bytes")

            r = subprocess.run(["umount", mnt], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            check(r.returncode == 0, "umount (exit 0): %s" % r.stdout.strip())
            deadline = time.monotonic() + 15
            while daemon_pids(mnt) and time.monotonic() < deadline:
                time.sleep(0.1)
            check(not daemon_pids(mnt), "the daemon exits after umount")

            # a server that is not there: mount fails and says why
            with open(fstab, "w") as f:
                f.write(line(free_port()))  # bound and closed: nobody listens
            r = mount(fstab, mnt, env)
            print("mount with a wrong port: exit %d, stderr %r" % (r.returncode, r.stderr.strip()))
            check(r.returncode != 0, "a mount that cannot reach the server fails")
            check("connect" in r.stderr or "refused" in r.stderr.lower(),
                  "and says why on stderr")
            check(not is_mounted(mnt), "nothing is left mounted")
    finally:
        if is_mounted(mnt):
            subprocess.run(["umount", "-l", mnt], stdin=subprocess.DEVNULL)
        for pid in daemon_pids(mnt):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
