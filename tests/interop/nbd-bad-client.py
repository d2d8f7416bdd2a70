#!/usr/bin/env python3
"""Misbehaving NBD clients against a server on a Unix socket (export "exp",
64 MiB): each must get an error reply or a disconnect.
Usage: nbd-bad-client.py SOCKET"""
import socket
import struct
import sys

PATH = sys.argv[1]
MiB = 1 << 20
OPTS = b"IHAVEOPT"


def recvall(s, n):
    b = b""
    while len(b) < n:
        d = s.recv(n - len(b))
        if not d:
            raise EOFError("server closed the connection")
        b += d
    return b


def conn():
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(PATH)
    g = recvall(s, 18)
    assert g[:8] == b"NBDMAGIC" and g[8:16] == OPTS, "bad greeting"
    s.sendall(struct.pack(">I", 3))
    return s


def closed(s):
    try:
        while s.recv(4096):
            pass
        return True
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def opt(s, o, data=b""):
    s.sendall(OPTS + struct.pack(">II", o, len(data)) + data)


def reply(s):
    magic, o, typ, ln = struct.unpack(">QIII", recvall(s, 20))
    assert magic == 0x3E889045565A9, "bad option reply magic"
    recvall(s, ln)
    return typ


def go(s):
    opt(s, 7, struct.pack(">I", 3) + b"exp" + struct.pack(">H", 0))
    while True:
        t = reply(s)
        if t == 1:
            return
        assert t == 3, "GO failed: 0x%x" % t


def req(s, typ, off, ln, cookie=1, flags=0, magic=0x25609513):
    s.sendall(struct.pack(">IHHQQI", magic, flags, typ, cookie, off, ln))


def simple(s, cookie=1):
    magic, err, c = struct.unpack(">IIQ", recvall(s, 16))
    assert magic == 0x67446698 and c == cookie, "bad simple reply"
    return err


def check(name, ok):
    if not ok:
        print("FAIL: " + name)
        sys.exit(1)
    print("ok: " + name)


s = conn()
opt(s, 7)  # header only, then a 2 GB length
s.close()
s = conn()
s.sendall(OPTS + struct.pack(">II", 7, 0x7FFFFFFF))
check("oversized option disconnects", closed(s))

s = conn()
for i in range(32):
    opt(s, 3)
    while reply(s) != 1:
        pass
opt(s, 3)
check("33rd option disconnects", closed(s))

s = conn()
s.sendall(b"IHAVEOPX" + struct.pack(">II", 3, 0))
check("bad option magic disconnects", closed(s))

s = conn()
go(s)
req(s, 0, 64 * MiB - 512, 1024)
check("read past the end: EINVAL", simple(s) == 22)
req(s, 42, 0, 512)
check("unknown command: EINVAL", simple(s) == 22)
req(s, 0, 0, 512, flags=0x8000)
check("unknown flag: EINVAL", simple(s) == 22)
req(s, 0, 0, 32 * MiB + 1)
check("read above 32 MiB: EOVERFLOW", simple(s) == 75)
req(s, 0, 0, 32 * MiB)
check("read of exactly 32 MiB works", simple(s) == 0 and len(recvall(s, 32 * MiB)) == 32 * MiB)
req(s, 0, 0, 512, magic=0x12345678)
check("bad request magic disconnects", closed(s))

s = conn()
go(s)
req(s, 1, 0, 33 * MiB)
check("write above 32 MiB disconnects", closed(s))

s = conn()
go(s)
req(s, 1, 0, MiB)
s.sendall(b"\xee" * 1000)
s.close()  # abrupt disconnect in the middle of a write payload
s = conn()
go(s)
for i in range(8):
    req(s, 0, i * MiB, MiB, cookie=i)
s.close()  # gone with reads in flight
print("ok: abrupt disconnects")
