#!/usr/bin/env python3
"""Throughput probe for the bench relay.

  tput.py serve HOST PORT     accept connections (PORT 0: any free one; prints
                              "ready PORT"); for each, read an 8-byte count N
                              and send N bytes back
  tput.py fetch HOST PORT N   connect, ask for N bytes, print "<bytes> <secs>"
"""
import socket
import struct
import sys
import threading
import time

CHUNK = 1 << 20


def serve(host, port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(8)
    print("ready", ls.getsockname()[1], flush=True)
    payload = memoryview(b"x" * CHUNK)

    def one(s):
        with s:
            hdr = b""
            while len(hdr) < 8:
                d = s.recv(8 - len(hdr))
                if not d:
                    return
                hdr += d
            (n,) = struct.unpack("<Q", hdr)
            while n > 0:
                k = min(n, CHUNK)
                s.sendall(payload[:k])
                n -= k
            s.shutdown(socket.SHUT_WR)
            s.recv(1)

    while True:
        s, _ = ls.accept()
        threading.Thread(target=one, args=(s,), daemon=True).start()


def fetch(host, port, n):
    s = socket.create_connection((host, port))
    buf = bytearray(CHUNK)
    t0 = time.perf_counter()
    s.sendall(struct.pack("<Q", n))
    got = 0
    while True:
        k = s.recv_into(buf)
        if k == 0:
            break
        got += k
    t = time.perf_counter() - t0
    s.close()
    print(got, f"{t:.6f}")


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    else:
        fetch(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
