"""Integration-test harness: a private Dovecot and a mounted imapfs.

Python 3 standard library only.

    from harness import Dovecot, Imapfs, build_dir
    with Dovecot(corpus=True) as dc:
        c = dc.client()                       # imaplib, logged in, TLS verified
        dc.doveadm("mailbox", "status", "-u", dc.user, "messages", "INBOX")
        with Imapfs(dc, opts=["-o", "refresh=1"]) as m:
            os.listdir(m.path)

Environment: IMAPFS_BUILD (build folder, set by meson), IMAPFS_SOURCE (source
folder), IMAPFS_TEST_TMP (where instances and mount points go; scripts/test
sets it so it can clean up after a crash), IMAPFS_KEEP=1 (keep temp folders).

A test exits 0 on success, 77 to skip (meson's convention: skip()), anything
else on failure. SIGTERM (meson's timeout) unwinds the `with` blocks, so the
daemon is unmounted and Dovecot stopped.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import imaplib

HERE = os.path.dirname(os.path.abspath(__file__))
MOUNT_TIMEOUT = 20.0
EXIT_TIMEOUT = 10.0


def _sigterm(signum, frame):
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _sigterm)


def source_dir():
    return os.path.abspath(os.environ.get("IMAPFS_SOURCE") or os.path.join(HERE, "..", ".."))


def build_dir():
    """The meson build folder holding fs/imapfs (IMAPFS_BUILD, else a guess)."""
    d = os.environ.get("IMAPFS_BUILD")
    if d:
        return os.path.abspath(d)
    src = source_dir()
    for name in ("build-test", "build"):
        if os.path.isdir(os.path.join(src, name)):
            return os.path.join(src, name)
    return os.path.join(src, "build")


def script(name):
    return os.path.join(source_dir(), "scripts", name)


def tmp_root():
    d = os.environ.get("IMAPFS_TEST_TMP") or tempfile.gettempdir()
    os.makedirs(d, exist_ok=True)
    return d


def skip(why):
    print("SKIP: %s" % why)
    sys.exit(77)


def check(cond, what):
    """Assert with a message; prints what was checked when it holds."""
    if not cond:
        raise AssertionError(what)
    print("ok: %s" % what)


# --- corpus ----------------------------------------------------------------

_manifest = None


def corpus_manifest():
    """{mailbox: [corpus file, ...]}; the n-th file has UID n after loading."""
    global _manifest
    if _manifest is None:
        out = subprocess.run([script("corpus"), "manifest"], check=True,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE).stdout
        _manifest = json.loads(out)
    return _manifest


def crlf(data):
    """LF line ends as an IMAP server serves them (CRLF)."""
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


def corpus_message(path):
    """The message bytes as Dovecot serves them (From_ line dropped, CRLF)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw.startswith(b"From "):
        nl = raw.find(b"\n")
        raw = raw[nl + 1:] if nl >= 0 else b""
    return crlf(raw)


# --- Dovecot ---------------------------------------------------------------

def _read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            env[k] = v.strip("'")
    return env


class Dovecot:
    """A private Dovecot instance in a temp folder, stopped (and removed) at exit."""

    def __init__(self, corpus=False):
        self.corpus = corpus
        self.dir = None
        self._clients = []

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="dovecot.", dir=tmp_root())
        os.chmod(self.dir, 0o755)  # Dovecot's mail user must reach DIR/home
        try:
            self._run("start", *(["--corpus"] if self.corpus else []))
            env = _read_env(os.path.join(self.dir, "env"))
        except BaseException:
            self._cleanup(failed=True)
            raise
        self.env = env
        self.host = env["HOST"]
        self.imaps_port = int(env["IMAPS_PORT"])
        self.imap_port = int(env["IMAP_PORT"])
        self.user = env["IMAP_USER"]
        self.password_file = env["PASSWORD_FILE"]
        with open(self.password_file) as f:
            self.password = f.read().strip()
        self.cafile = env["CAFILE"]
        self.config = env["CONFIG"]
        self.log = env["LOG"]
        self.maildir = env["MAILDIR"]
        return self

    def __exit__(self, exc_type, exc, tb):
        self._cleanup(failed=exc_type is not None)
        return False

    def _cleanup(self, failed):
        for c in self._clients:
            with contextlib.suppress(Exception):
                c.logout()
        self._clients = []
        if self.dir is None:
            return
        with contextlib.suppress(Exception):
            self._run("stop")
        if failed:
            sys.stderr.write("--- last lines of %s/dovecot.log\n" % self.dir)
            with contextlib.suppress(OSError), open(os.path.join(self.dir, "dovecot.log"),
                                                    errors="replace") as f:
                sys.stderr.write("".join(f.readlines()[-20:]))
        if os.environ.get("IMAPFS_KEEP"):
            sys.stderr.write("kept %s\n" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def _run(self, *args):
        subprocess.run([script("dovecot-instance"), args[0], self.dir] + list(args[1:]),
                       check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def stop(self):
        """Stop the server; ports and mail stay for start()."""
        self._run("stop")

    def start(self):
        self._run("start")

    def ssl_context(self):
        return ssl.create_default_context(cafile=self.cafile)

    def client(self, starttls=False, login=True):
        """An independent imaplib client, TLS verified against dc.cafile."""
        ctx = self.ssl_context()
        if starttls:
            c = imaplib.IMAP4(self.host, self.imap_port, timeout=30)
            c.starttls(ssl_context=ctx)
        else:
            c = imaplib.IMAP4_SSL(self.host, self.imaps_port, ssl_context=ctx, timeout=30)
        if login:
            c.login(self.user, self.password)
        self._clients.append(c)
        return c

    def doveadm(self, *args):
        """doveadm against this instance; returns stdout, raises with stderr."""
        r = subprocess.run(["doveadm", "-c", self.config] + list(args),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise RuntimeError("doveadm %s: exit %d: %s"
                               % (" ".join(args), r.returncode, r.stderr.strip()))
        return r.stdout

    def message_count(self, mailbox):
        out = self.doveadm("mailbox", "status", "-u", self.user, "messages", mailbox)
        return int(out.split("messages=")[1].split()[0])


# --- imapfs ----------------------------------------------------------------

def _unescape_mountinfo(s):
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def is_mounted(path):
    """True when a FUSE filesystem is mounted exactly at path."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) >= 5 and _unescape_mountinfo(fields[4]) == path \
                    and right.split()[0].startswith("fuse"):
                return True
    return False


class Imapfs:
    """Mounts build_dir()/fs/imapfs in the foreground (-f) as a child process.

    tls: "implicit" (IMAPS port) or "starttls" (-o tls=starttls, IMAP port).
    At exit: fusermount3 -u, wait for the daemon (kill -9 after 10 s), and
    fail if the daemon exited non-zero (sanitizer reports end up there).
    """

    def __init__(self, dc, opts=(), tls="implicit", mountpoint=None, cache_path=None,
                 check_exit=True, binary=None):
        self.dc = dc
        self.opts = list(opts)
        self.tls = tls
        self.path = mountpoint
        self.cache_path = cache_path
        self.check_exit = check_exit
        self.binary = binary or os.path.join(build_dir(), "fs", "imapfs")
        self.proc = None
        self.returncode = None
        self._tmp = None
        self._log = None

    def command(self):
        port = self.dc.imaps_port if self.tls == "implicit" else self.dc.imap_port
        cmd = [self.binary, "-f",
               "-o", "cafile=%s" % self.dc.cafile,
               "-o", "password_command=cat %s" % self.dc.password_file,
               "-o", "cache=%s" % self.cache_path]
        if self.tls != "implicit":
            cmd += ["-o", "tls=%s" % self.tls]
        return cmd + self.opts + ["%s@%s:%d" % (self.dc.user, self.dc.host, port), self.path]

    def __enter__(self):
        if not os.access(self.binary, os.X_OK):
            raise FileNotFoundError("no daemon at %s (build first)" % self.binary)
        self._tmp = tempfile.mkdtemp(prefix="imapfs.", dir=tmp_root())
        if self.path is None:
            self.path = os.path.join(self._tmp, "mnt")
            os.mkdir(self.path)
        if self.cache_path is None:
            self.cache_path = os.path.join(self._tmp, "cache.db")
        self.log_path = os.path.join(self._tmp, "imapfs.log")
        self._log = open(self.log_path, "w+b")
        cmd = self.command()
        print("mount: %s" % " ".join(cmd))
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        try:
            self._wait_mounted()
        except BaseException:
            self._teardown()
            self._show_log("imapfs did not mount")
            self._cleanup_tmp()
            raise
        return self

    def _wait_mounted(self):
        deadline = time.monotonic() + MOUNT_TIMEOUT
        while time.monotonic() < deadline:
            if is_mounted(self.path):
                return
            if self.proc.poll() is not None:
                raise RuntimeError("imapfs exited with %d before mounting" % self.proc.returncode)
            time.sleep(0.02)
        raise RuntimeError("imapfs did not mount %s within %.0f s" % (self.path, MOUNT_TIMEOUT))

    def stderr(self):
        """The daemon's output so far (stdout and stderr)."""
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def _show_log(self, title, n=60):
        with contextlib.suppress(OSError):
            lines = self.stderr().splitlines()
            sys.stderr.write("--- %s; imapfs output (last %d of %d lines):\n"
                             % (title, min(n, len(lines)), len(lines)))
            sys.stderr.write("\n".join(lines[-n:]) + "\n---\n")

    def unmount(self):
        """Unmount and wait for the daemon; returns its exit status."""
        self._teardown()
        return self.returncode

    def _teardown(self):
        if self.proc is None:
            return
        if is_mounted(self.path):
            r = subprocess.run(["fusermount3", "-u", self.path], stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if r.returncode != 0:
                sys.stderr.write("fusermount3 -u: %s; lazy unmount\n" % r.stdout.decode().strip())
                subprocess.run(["fusermount3", "-u", "-z", self.path], stdin=subprocess.DEVNULL)
        try:
            self.returncode = self.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            sys.stderr.write("imapfs still running %.0f s after unmount: kill -9\n"
                             % EXIT_TIMEOUT)
            self.proc.kill()
            self.returncode = self.proc.wait()
        if is_mounted(self.path):
            subprocess.run(["fusermount3", "-u", "-z", self.path], stdin=subprocess.DEVNULL)
        self.proc = None

    def _cleanup_tmp(self):
        if self._log:
            self._log.close()
            self._log = None
        if self._tmp and not os.environ.get("IMAPFS_KEEP"):
            shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None

    def __exit__(self, exc_type, exc, tb):
        try:
            self._teardown()
            if exc_type is not None:
                self._show_log("test failed")
            elif self.check_exit and self.returncode != 0:
                self._show_log("imapfs exited with %d" % self.returncode)
                raise AssertionError("imapfs exited with status %d after unmount"
                                     % self.returncode)
        finally:
            self._cleanup_tmp()
        return False


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
