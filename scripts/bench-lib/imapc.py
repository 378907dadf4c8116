#!/usr/bin/env python3
"""The bench's independent IMAP client (stdlib only, no imaplib).

A lean client: one TLS connection (certificate verified with --cafile), each
command written in one go, responses read in 1 MiB chunks, literals skipped
without copying. It stands for the best a plain single-connection client can
do, so imapfs is compared with a fair anchor rather than with imaplib's
per-line parsing.

  imapc.py [conn options] meta MAILBOX         SELECT + UID FETCH 1:* (UID FLAGS
                                               RFC822.SIZE INTERNALDATE)
  imapc.py [conn options] bulk                 every mailbox: SELECT + UID FETCH
                                               1:* BODY.PEEK[]
  imapc.py [conn options] append MAILBOX FILE...|DIR  CREATE (untimed), then one
                                               APPEND per file, each waiting for
                                               its OK (LITERAL+ when offered)
  imapc.py [conn options] count MAILBOX        messages in MAILBOX
  imapc.py [conn options] delete MAILBOX...    DELETE (missing ones ignored)
  imapc.py [conn options] sizes                per mailbox: messages, sum of
                                               RFC822.SIZE

Timed commands print "key=value" lines: t_total (connect to LOGOUT sent),
t_work (after LOGIN: the commands themselves), cpu (this client's own CPU
seconds, to show it is not the bottleneck), plus counts and bytes.
"""
import argparse
import os
import re
import socket
import ssl
import sys
import time

LIST_RE = re.compile(rb'^\* LIST \(([^)]*)\) (?:"(?:[^"\\]|\\.)*"|NIL) (.*)$')


class ImapError(Exception):
    pass


class Conn:
    def __init__(self, host, port, cafile, user, password):
        ctx = ssl.create_default_context(cafile=cafile)
        raw = socket.create_connection((host, port))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.s = ctx.wrap_socket(raw, server_hostname=host)
        self.buf = b""
        self.pos = 0
        self.n = 0
        self.bytes_in = 0
        greeting = self._line()
        if not greeting.startswith(b"* OK"):
            raise ImapError(f"greeting: {greeting!r}")
        self.caps = set()
        lines = self.cmd(b"LOGIN " + quote(user) + b" " + quote(password))
        tagged = lines[-1]
        m = re.search(rb"\[CAPABILITY ([^\]]*)\]", tagged)
        if m:
            self.caps = set(m.group(1).upper().split())
        else:
            for ln in self.cmd(b"CAPABILITY"):
                if ln.startswith(b"* CAPABILITY "):
                    self.caps = set(ln[13:].upper().split())

    def _recv(self):
        d = self.s.recv(1 << 20)
        if not d:
            raise ImapError("connection closed")
        self.bytes_in += len(d)
        return d

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n", self.pos)
            if i >= 0:
                ln = self.buf[self.pos:i]
                self.pos = i + 2
                return ln
            self.buf = self.buf[self.pos:] + self._recv()
            self.pos = 0

    def _skip(self, n):
        """Drop the next n bytes (a literal) without keeping them."""
        avail = len(self.buf) - self.pos
        if avail >= n:
            self.pos += n
            return
        n -= avail
        self.buf, self.pos = b"", 0
        while n > 0:
            d = self._recv()
            if len(d) > n:
                self.buf = d
                self.pos = n
                return
            n -= len(d)

    def send(self, data):
        self.s.sendall(data)

    def tag(self):
        self.n += 1
        return b"A%d" % self.n

    def wait(self, tag, keep=True):
        """Read up to the tagged response; returns the non-literal lines kept
        (the tagged line last) and the number of literals skipped."""
        lines, lits = [], 0
        t = tag + b" "
        while True:
            ln = self._line()
            n = -1
            if ln.endswith(b"}"):
                j = ln.rfind(b"{")
                if j >= 0:
                    try:
                        n = int(ln[j + 1:-1].rstrip(b"+"))
                    except ValueError:
                        n = -1
            if n >= 0:
                self._skip(n)
                lits += 1
                if keep:
                    lines.append(ln)
                continue
            if ln.startswith(t):
                lines.append(ln)
                if not ln[len(t):].startswith(b"OK"):
                    raise ImapError(ln.decode(errors="replace"))
                self.lits = lits
                return lines
            if keep:
                lines.append(ln)

    def cmd(self, body, keep=True):
        tag = self.tag()
        self.send(tag + b" " + body + b"\r\n")
        return self.wait(tag, keep)

    def logout(self):
        try:
            self.cmd(b"LOGOUT")
        except ImapError:
            pass
        self.s.close()

    def mailboxes(self):
        out = []
        for ln in self.cmd(b'LIST "" "*"'):
            m = LIST_RE.match(ln)
            if not m or b"\\noselect" in m.group(1).lower() or b"\\nonexistent" in m.group(1).lower():
                continue
            out.append(m.group(2))
        return out

    def append(self, mailbox, data):
        tag = self.tag()
        if b"LITERAL+" in self.caps:
            self.send(tag + b" APPEND " + mailbox + b" {%d+}\r\n" % len(data) + data + b"\r\n")
        else:
            self.send(tag + b" APPEND " + mailbox + b" {%d}\r\n" % len(data))
            ln = self._line()
            if not ln.startswith(b"+"):
                raise ImapError(ln.decode(errors="replace"))
            self.send(data + b"\r\n")
        self.wait(tag, keep=False)


def quote(s):
    if isinstance(s, str):
        s = s.encode()
    return b'"' + s.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password-file", required=True)
    ap.add_argument("op")
    ap.add_argument("args", nargs="*")
    a = ap.parse_args()
    with open(a.password_file) as f:
        password = f.read().rstrip("\n")

    t0 = time.perf_counter()
    c = Conn(a.host, a.port, a.cafile, a.user, password)
    t1 = time.perf_counter()
    out = {}
    if a.op == "meta":
        box = quote(a.args[0])
        c.cmd(b"SELECT " + box, keep=False)
        lines = c.cmd(b"UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)")
        out["messages"] = sum(1 for ln in lines if ln.startswith(b"* "))
    elif a.op == "bulk":
        nmsg = 0
        for box in c.mailboxes():
            exists = 0
            for ln in c.cmd(b"SELECT " + box):
                if ln.endswith(b" EXISTS"):
                    exists = int(ln.split()[1])
            if exists:
                c.cmd(b"UID FETCH 1:* BODY.PEEK[]", keep=False)
                nmsg += c.lits
        out["messages"] = nmsg
    elif a.op == "append":
        box = quote(a.args[0])
        datas = []
        files = a.args[1:]
        if len(files) == 1 and os.path.isdir(files[0]):
            files = sorted(os.path.join(files[0], n) for n in os.listdir(files[0]))
        for p in files:
            with open(p, "rb") as f:
                datas.append(f.read())
        c.cmd(b"CREATE " + box, keep=False)
        t1 = time.perf_counter()
        for d in datas:
            c.append(box, d)
        out["messages"] = len(datas)
        out["bytes_sent"] = sum(len(d) for d in datas)
        out["literal_plus"] = int(b"LITERAL+" in c.caps)
    elif a.op == "count":
        lines = c.cmd(b"STATUS " + quote(a.args[0]) + b" (MESSAGES)")
        m = re.search(rb"MESSAGES (\d+)", b"".join(lines))
        out["messages"] = int(m.group(1)) if m else -1
    elif a.op == "delete":
        for b in a.args:
            try:
                c.cmd(b"DELETE " + quote(b), keep=False)
            except ImapError:
                pass
    elif a.op == "sizes":
        total_m = total_b = 0
        for box in c.mailboxes():
            exists = 0
            for ln in c.cmd(b"EXAMINE " + box):
                if ln.endswith(b" EXISTS"):
                    exists = int(ln.split()[1])
            size = 0
            if exists:
                for ln in c.cmd(b"FETCH 1:* (RFC822.SIZE)"):
                    m = re.search(rb"RFC822\.SIZE (\d+)", ln)
                    if m:
                        size += int(m.group(1))
            print(f"mailbox {box.decode(errors='replace')} {exists} {size}")
            total_m += exists
            total_b += size
        out["messages"] = total_m
        out["bytes"] = total_b
    else:
        ap.error("unknown op " + a.op)
    t2 = time.perf_counter()
    c.logout()
    out["t_total"] = f"{t2 - t0:.6f}"
    out["t_work"] = f"{t2 - t1:.6f}"
    out["bytes_in"] = c.bytes_in
    out["cpu"] = f"{time.process_time():.3f}"
    for k, v in out.items():
        print(f"{k}={v}")


if __name__ == "__main__":
    try:
        main()
    except (ImapError, OSError) as e:
        print(f"imapc: {e}", file=sys.stderr)
        sys.exit(1)
