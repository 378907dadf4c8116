#!/usr/bin/env python3
"""Speed by design, checked on the protocol trace (-d), not with a clock:
the first listing of a mailbox costs one bulk UID FETCH 1:* of the
metadata; a cold sequential scan (grep -r, cat of every file in listing
order, cat * in the shell's order, or reads in UID order as grep -r and
find make in a directory of over 10,000 files, which fts sorts by inode
number) fetches bodies in batches, not one UID FETCH per message; a second
scan and a re-listing within the refresh interval send nothing; `head` of
a large message fetches only its head (BODY.PEEK[]<0.n>); every byte read
matches the server."""

import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Dovecot, Imapfs, check  # noqa: E402
from test_mount_lib import eml_uids, read_file, server_bodies  # noqa: E402

N = 300


def msg(i):
    return ("From: prefetch@example.org\r\nSubject: prefetch %d\r\n"
            "Message-ID: <prefetch-%d@example.org>\r\n\r\n%s%s\r\n"
            % (i, i, ("filler line %d\r\n" % i) * (i % 40), "needle" if i % 7 == 0 else "")
            ).encode()


def commands(m):
    return [line.split("C: ", 1)[1] for line in m.stderr().splitlines() if " C: " in line]


def uid_set(cmd):
    """the UIDs of a UID FETCH command's set"""
    uids = set()
    for part in re.search(r"UID FETCH (\S+)", cmd).group(1).split(","):
        lo, _, hi = part.partition(":")
        uids.update(range(int(lo), int(hi or lo) + 1))
    return uids


def main():
    with Dovecot() as dc:
        # every connection of the pool logs in at mount, not with its first
        # job: here nothing but an empty INBOX needs one
        with Imapfs(dc, opts=["-d", "-o", "connections=4"]) as m:
            want = ["connection %d open" % i for i in (1, 2, 3)]
            deadline = time.time() + 10
            while not all(w in m.stderr() for w in want) and time.time() < deadline:
                time.sleep(0.05)
            check(all(w in m.stderr() for w in want),
                  "all 4 connections logged in at mount, with no file touched")
        c = dc.client()
        c.create("Scan")
        for i in range(1, N + 1):
            c.append("Scan", None, None, msg(i))
        expected = server_bodies(c, "Scan")
        c.create("Glob")
        for i in range(1, N + 1):
            c.append("Glob", None, None, msg(i))
        c.create("Ordered")
        for i in range(1, N + 1):
            # ~2 KB each: a first look-ahead does not cover the mailbox
            c.append("Ordered", None, None, msg(i) + b"padding line\r\n" * 150)
        c.create("Large")
        c.append("Large", None, None, b"From: large@example.org\r\nSubject: large\r\n\r\n"
                 + b"".join(b"%07d large message line\r\n" % i for i in range(60000)))
        big = server_bodies(c, "Large")[1]
        # more mailboxes of a few small messages, and one in INBOX, for the
        # look-ahead into the mailbox a walk of the tree reads next
        for name in ("WalkA", "WalkB"):
            c.create(name)
            for i in range(1, 6):
                c.append(name, None, None, msg(i))
        c.append("INBOX", None, None, msg(1))
        with Imapfs(dc, opts=["-d", "-o", "refresh=600"]) as m:
            scan = os.path.join(m.path, "Scan")
            check(eml_uids(scan) == list(range(1, N + 1)), "Scan lists %d messages" % N)
            # let the listings the daemon starts after mounting finish: listing
            # a directory waits for its sync
            for name in os.listdir(m.path):
                eml_uids(os.path.join(m.path, name))
            # every mailbox has messages
            meta = [x for x in commands(m) if re.search(r"UID FETCH \S+ \(UID FLAGS RFC822\.SIZE", x)]
            check(len(meta) == 7 and all(" 1:* " in x for x in meta),
                  "each first listing is one bulk UID FETCH 1:* (%s)" % meta)

            # 1.eml comes first in both orders: the fetch its first read waits
            # for looks ahead in both, so 2.eml is in it as well (nothing has
            # been read yet, so no look-ahead from another directory either)
            ordered = os.path.join(m.path, "Ordered")
            expected_ordered = server_bodies(c, "Ordered")
            n_before = len(commands(m))
            check(read_file(os.path.join(ordered, "1.eml")) == expected_ordered[1],
                  "Ordered/1.eml has the server's bytes")
            first = [x for x in commands(m)[n_before:] if "BODY.PEEK[]" in x]
            check(len(first) == 1 and {2, 3, 10, 100} <= uid_set(first[0]),
                  "the first read of a directory fetches ahead in UID and name order (%s)"
                  % first)
            # a body fetched ahead goes into the page cache with its file's
            # open, so reading it costs no READ request
            deadline = time.time() + 10
            while "Ordered: fetch of" not in m.stderr() and time.time() < deadline:
                time.sleep(0.05)
            check(read_file(os.path.join(ordered, "2.eml")) == expected_ordered[2],
                  "Ordered/2.eml, fetched ahead, has the server's bytes")
            check("Ordered/2.eml: in the page cache with the open" in m.stderr(),
                  "and went into the page cache with the open")
            r = subprocess.run(["grep", "-rl", "needle", scan], stdout=subprocess.PIPE, text=True)
            found = sorted(int(os.path.basename(p)[:-4]) for p in r.stdout.split())
            check(found == [i for i in range(1, N + 1) if i % 7 == 0],
                  "grep -rl finds the %d messages holding the needle" % len(found))
            bodies = [x for x in commands(m) if "BODY.PEEK[]" in x]
            fetched = set()
            for cmd in bodies:
                fetched |= uid_set(cmd)
            print("  body fetches: %s" % [re.search(r"UID FETCH (\S+)", x).group(1) for x in bodies])
            check(fetched == set(range(1, N + 1)), "every message fetched")
            check(len(bodies) <= N // 10,
                  "cold grep -r: %d UID FETCH commands for %d messages (batched)"
                  % (len(bodies), N))
            check(not [x for x in bodies if "BODY[]" in x.replace("BODY.PEEK[]", "")],
                  "bodies fetched with BODY.PEEK[] only")

            before = len(commands(m))
            for uid in range(1, N + 1):
                if read_file(os.path.join(scan, "%d.eml" % uid)) != expected[uid]:
                    raise AssertionError("%d.eml differs from the server" % uid)
            check(True, "all %d files read the server's bytes" % N)
            eml_uids(scan)
            check(len(commands(m)) == before,
                  "a second scan and a re-listing within refresh send no command")

            # cat * reads in the shell's (byte) order: 1, 10, 100, 101, ... 2, 20, ...
            glob = os.path.join(m.path, "Glob")
            names = os.listdir(glob)
            check(names == sorted(names, key=lambda x: x.encode()),
                  "readdir lists files in byte order, as ls and globs sort them")
            n_before = len(commands(m))
            r = subprocess.run("cat *.eml", shell=True, cwd=glob, stdout=subprocess.PIPE,
                               env=dict(os.environ, LC_ALL="C"))
            bodies = [x for x in commands(m)[n_before:] if "BODY.PEEK[]" in x]
            expected_glob = server_bodies(c, "Glob")
            check(r.stdout == b"".join(expected_glob[int(n[:-4])] for n in sorted(names)),
                  "cat * gives every message's bytes in glob order")
            check(len(bodies) <= N // 10,
                  "cold cat *: %d UID FETCH commands for %d messages (batched)" % (len(bodies), N))

            # fts (grep -r, find) reads a directory of over 10,000 files in
            # inode order: UID order here, not the listing's byte order
            n_before = len(commands(m))
            for uid in range(1, N + 1):
                if read_file(os.path.join(ordered, "%d.eml" % uid)) != expected_ordered[uid]:
                    raise AssertionError("Ordered/%d.eml differs from the server" % uid)
            bodies = [x for x in commands(m)[n_before:] if "BODY.PEEK[]" in x]
            print("  body fetches in UID order: %s"
                  % [re.search(r"UID FETCH (\S+)", x).group(1) for x in bodies])
            check(len(bodies) <= N // 20,
                  "cold reads in UID order: %d UID FETCH commands for %d messages (batched)"
                  % (len(bodies), N))

            # a large message: its head alone for `head`, the whole body once read past it
            large = os.path.join(m.path, "Large", "1.eml")
            n_before = len(commands(m))
            r = subprocess.run(["head", "-c", "4096", large], stdout=subprocess.PIPE)
            check(r.stdout == big[:4096], "head -c 4096 of a %d-byte message reads its first bytes"
                  % len(big))
            sent = commands(m)[n_before:]
            print("  commands for head: %s" % sent)
            check(any("BODY.PEEK[]<0." in x for x in sent)
                  and not any(x.rstrip().endswith("BODY.PEEK[])") for x in sent),
                  "head fetched a partial BODY.PEEK[]<0.n>, not the whole message")
            check(read_file(large) == big, "reading it all gives the server's bytes")
            check(read_file(large) == big, "and again")

            log = m.stderr()
            check("LOGIN <redacted>" in log and dc.password not in log,
                  "the -d trace shows LOGIN with its arguments redacted, never the password")

        # A scan of a directory fetches the first files of the mailbox a
        # walk of the tree in readdir order (grep -r, find, tar) reads next
        # before anything there is read. The scan needs 3 files (INBOX has
        # 1), and Large's one message is over 1 MB (only its head is
        # fetched, when read): of the 7 mailboxes, 5 can come first and 6
        # second, so such neighbours always exist.
        with Imapfs(dc, opts=["-d", "-o", "refresh=600"]) as m:
            order = os.listdir(m.path)
            for name in order:
                eml_uids(os.path.join(m.path, name))  # listings done
            pairs = [(a, b) for a, b in zip(order, order[1:])
                     if a not in ("Large", "INBOX") and b != "Large"]
            check(pairs, "two neighbouring mailboxes of small messages in %s" % order)
            here, nxt = pairs[0]
            n_before = len(commands(m))
            names = sorted(os.listdir(os.path.join(m.path, here)), key=lambda x: x.encode())
            for name in names[:3]:
                read_file(os.path.join(m.path, here, name))
            pattern = "%s: prefetching its first" % nxt
            deadline = time.time() + 10
            while pattern not in m.stderr() and time.time() < deadline:
                time.sleep(0.1)
            check(pattern in m.stderr(),
                  "reading 3 files of %s fetches the first files of %s, next in %s"
                  % (here, nxt, order))
            got = read_file(os.path.join(m.path, nxt, "1.eml"))
            check(got == server_bodies(c, nxt)[1], "%s/1.eml has the server's bytes" % nxt)
            # UID 1 is in two body fetches: the first of the scanned mailbox
            # and the look-ahead into the next; a fetch of its own for the
            # read would be a third
            ones = [x for x in commands(m)[n_before:] if "BODY.PEEK[]" in x and 1 in uid_set(x)]
            check(len(ones) == 2,
                  "and reading it needs no fetch of its own: it came ahead (%s)" % ones)
    return 0


if __name__ == "__main__":
    sys.exit(main())
