#!/usr/bin/env python3
"""Failing before the mount, and stopping cleanly: a wrong password, a
certificate from an untrusted CA, an unreachable port and a password on
the command line each give a non-zero exit and a one-line reason on stderr,
with nothing left mounted (in the foreground and when going to the
background). SIGINT at the terminal prompt leaves echo on. STARTTLS mounts. SIGTERM and fusermount3 -u unmount cleanly.
-o ro makes files 0444 and refuses changes with EROFS."""

import errno
import os
import pty
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import termios

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Dovecot, Imapfs, build_dir, check, is_mounted, tmp_root  # noqa: E402
from test_mount_lib import eml_uids, wait_for  # noqa: E402

BINARY = os.path.join(build_dir(), "fs", "imapfs")
TEMP_DIRS = []


def run_imapfs(dc, mnt, port=None, extra=(), password_cmd=None, cafile=None, foreground=True,
               preexec_fn=None):
    cmd = [BINARY] + (["-f"] if foreground else []) + [
        "-o", "cafile=%s" % (cafile or dc.cafile),
        "-o", "password_command=%s" % (password_cmd or "cat %s" % dc.password_file),
        "-o", "cache=%s" % os.path.join(os.path.dirname(mnt), "cache.db"),
    ] + list(extra) + ["%s@%s:%d" % (dc.user, dc.host, port or dc.imaps_port), mnt]
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=60, preexec_fn=preexec_fn)


def expect_failure(dc, what, needle, **kw):
    d = tempfile.mkdtemp(prefix="errors.", dir=tmp_root())
    TEMP_DIRS.append(d)
    mnt = os.path.join(d, "mnt")
    os.mkdir(mnt)
    for fg in (True, False):
        r = run_imapfs(dc, mnt, foreground=fg, **kw)
        lines = [x for x in r.stderr.splitlines() if x.strip()]
        print("  %s (%s): exit %d, stderr %r" % (what, "-f" if fg else "background",
                                                 r.returncode, r.stderr.strip()))
        check(r.returncode != 0, "%s: non-zero exit (%s)" % (what, "-f" if fg else "background"))
        check(len(lines) == 1 and needle.lower() in lines[0].lower(),
              "%s: one line on stderr mentioning %r" % (what, needle))
        check(not is_mounted(mnt), "%s: nothing mounted" % what)
    return r


def make_other_ca(d):
    key, pem = os.path.join(d, "other.key"), os.path.join(d, "other.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", pem,
                    "-days", "1", "-subj", "/CN=Some Other CA"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return pem


def check_prompt_interrupted(dc):
    """SIGINT at the terminal password prompt (echo off): the daemon dies of
    the signal and leaves the terminal with echo on again."""
    d = tempfile.mkdtemp(prefix="prompt.", dir=tmp_root())
    TEMP_DIRS.append(d)
    mnt = os.path.join(d, "mnt")
    os.mkdir(mnt)
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execv(BINARY, [BINARY, "-f", "-o", "cafile=%s" % dc.cafile,
                              "-o", "cache=%s" % os.path.join(d, "cache.db"),
                              "%s@%s:%d" % (dc.user, dc.host, dc.imaps_port), mnt])
        finally:
            os._exit(127)
    out = b""
    try:
        while b"Password for" not in out:
            ready, _, _ = select.select([fd], [], [], 30)
            if not ready:
                check(False, "the terminal prompt appears (got %r)" % out)
            out += os.read(fd, 1024)
        wait_for("the prompt turns echo off",
                 lambda: not termios.tcgetattr(fd)[3] & termios.ECHO)
        os.kill(pid, signal.SIGINT)
        _, status = os.waitpid(pid, 0)
        check(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT,
              "SIGINT at the prompt ends the daemon (status %#x)" % status)
        check(termios.tcgetattr(fd)[3] & termios.ECHO,
              "SIGINT at the prompt leaves the terminal with echo on")
        check(not is_mounted(mnt), "SIGINT at the prompt: nothing mounted")
    finally:
        os.close(fd)


def main():
    with Dovecot() as dc:
        c = dc.client()
        c.append("INBOX", None, None, b"From: e@example.org\r\nSubject: e\r\n\r\nbody\r\n")

        expect_failure(dc, "wrong password", "auth", password_cmd="echo not-the-password")
        d = tempfile.mkdtemp(prefix="ca.", dir=tmp_root())
        TEMP_DIRS.append(d)
        expect_failure(dc, "untrusted CA", "certificate", cafile=make_other_ca(d))
        # a port bound but not listening refuses connections, and no other
        # test can start a server on it meanwhile
        closed = socket.socket()
        closed.bind(("127.0.0.1", 0))
        expect_failure(dc, "unreachable port", "connect", port=closed.getsockname()[1])
        closed.close()
        expect_failure(dc, "password on the command line", "never accepted",
                       extra=["-o", "password=secret"])
        expect_failure(dc, "failing password command", "password command",
                       password_cmd="exit 3")
        # SIGCHLD ignored (inherited): the password command's child is reaped
        # by the kernel, waitpid() fails with ECHILD and gives no exit status
        expect_failure(dc, "no exit status of the password command", "waitpid",
                       preexec_fn=lambda: signal.signal(signal.SIGCHLD, signal.SIG_IGN))
        expect_failure(dc, "empty password from the command", "empty password",
                       password_cmd="echo")
        expect_failure(dc, "no output from the password command", "empty password",
                       password_cmd="true")
        check_prompt_interrupted(dc)
        expect_failure(dc, "an unknown FUSE option", "bogus", extra=["-o", "bogus_option=1"])
        r = run_imapfs(dc, os.path.join(tmp_root(), "no-such-dir-%d" % os.getpid()))
        check(r.returncode != 0 and r.stderr.strip().count("\n") == 0
              and "mount point" in r.stderr, "a missing mount point: one line (%r)" % r.stderr.strip())

        # plaintext only when asked: STARTTLS port with tls=none is refused by the
        # server's policy here, but the daemon must not silently downgrade
        expect_failure(dc, "implicit TLS against the STARTTLS port", "TLS",
                       port=dc.imap_port, extra=["-o", "timeout=5"])

        # STARTTLS
        with Imapfs(dc, tls="starttls") as m:
            check(eml_uids(os.path.join(m.path, "INBOX")) == [1], "STARTTLS mount lists INBOX")

        # SIGTERM unmounts and exits 0 (clean: no leak under the sanitizers)
        with Imapfs(dc) as m:
            os.listdir(os.path.join(m.path, "INBOX"))
            # a directory still open: the kernel never releases its handle
            held = os.open(os.path.join(m.path, "INBOX"), os.O_RDONLY | os.O_DIRECTORY)
            m.proc.send_signal(signal.SIGTERM)
            code = m.proc.wait(timeout=30)
            try:
                os.close(held)
            except OSError:
                pass
            check(code == 0, "SIGTERM: daemon exits 0")
            check(not is_mounted(m.path), "SIGTERM: nothing left mounted")

        # background: the parent exits 0 once mounted; fusermount3 -u stops it
        d = tempfile.mkdtemp(prefix="bg.", dir=tmp_root())
        TEMP_DIRS.append(d)
        mnt = os.path.join(d, "mnt")
        os.mkdir(mnt)
        r = run_imapfs(dc, mnt, foreground=False)
        check(r.returncode == 0 and is_mounted(mnt), "background: exit 0 with the mount in place")
        check(eml_uids(os.path.join(mnt, "INBOX")) == [1], "background: the mount works")
        pids = subprocess.run(["pgrep", "-f", "imapfs.*%s" % mnt], stdout=subprocess.PIPE,
                              text=True).stdout.split()
        subprocess.run(["fusermount3", "-u", mnt], check=True)
        check(not is_mounted(mnt), "fusermount3 -u unmounts")
        wait_for("the daemon exits after fusermount3 -u",
                 lambda: all(not os.path.exists("/proc/%s" % p) for p in pids))
        check(True, "the background daemon exited")

        # read-only
        with Imapfs(dc, opts=["-o", "ro"]) as m:
            f = os.path.join(m.path, "INBOX", "1.eml")
            check(os.stat(f).st_mode & 0o777 == 0o444, "-o ro: files are 0444")
            try:
                os.setxattr(f, "user.imap.flags", b"\\Flagged")
                err = 0
            except OSError as e:
                err = e.errno
            check(err == errno.EROFS, "-o ro: setting user.imap.flags gives EROFS")
            try:
                with open(os.path.join(m.path, "INBOX", "new.eml"), "wb") as out:
                    out.write(b"x")
                err = 0
            except OSError as e:
                err = e.errno
            check(err == errno.EROFS, "-o ro: creating a file gives EROFS")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        for d in TEMP_DIRS:
            shutil.rmtree(d, ignore_errors=True)
