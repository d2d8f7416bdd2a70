#!/usr/bin/env python3
"""Edits qcow2 metadata in place to build corrupt test images (tests only).

usage: qcow2-edit.py IMAGE CMD ARGS...
  getref CLUSTER            print the stored refcount of a cluster
  setref CLUSTER VALUE      set the stored refcount of a cluster
  l1 INDEX [VALUE]          print / set a raw active L1 entry
  l2 GUEST_OFFSET [VALUE]   print / set the raw L2 entry mapping a guest offset
  reftable INDEX [VALUE]    print / set a raw refcount table entry
  hdr32 OFFSET VALUE        write a big-endian u32 header field
  hdr64 OFFSET VALUE        write a big-endian u64 header field
  l1-uncopy INDEX           clear OFLAG_COPIED of an active L1 entry
  l2-uncopy GUEST_OFFSET    clear OFLAG_COPIED of the L2 entry of a guest offset
  snap-l1size INDEX VALUE   set l1_size of snapshot table entry INDEX
Values accept 0x prefixes.
"""
import struct
import sys


def num(v):
    return int(v, 0) & (2**64 - 1)


class Img:
    def __init__(self, path):
        self.f = open(path, "r+b")
        h = self.rd(0, 104)
        (self.cluster_bits,) = struct.unpack(">I", h[20:24])
        self.cs = 1 << self.cluster_bits
        (self.l1_size,) = struct.unpack(">I", h[36:40])
        (self.l1_off, self.rt_off) = struct.unpack(">QQ", h[40:56])
        (self.nb_snap,) = struct.unpack(">I", h[60:64])
        (self.snap_off,) = struct.unpack(">Q", h[64:72])
        (version,) = struct.unpack(">I", h[4:8])
        self.order = struct.unpack(">I", h[96:100])[0] if version >= 3 else 4
        self.bits = 1 << self.order

    def rd(self, off, n):
        self.f.seek(off)
        return self.f.read(n)

    def wr(self, off, b):
        self.f.seek(off)
        self.f.write(b)

    def q(self, off):
        return struct.unpack(">Q", self.rd(off, 8))[0]

    def refslot(self, c):
        per = self.cs * 8 // self.bits
        blk = self.q(self.rt_off + (c // per) * 8) & ~0x1ff
        if not blk:
            sys.exit("no refcount block for cluster %d" % c)
        return blk, c % per

    def getref(self, c):
        blk, i = self.refslot(c)
        nbytes = max(self.bits // 8, 1)
        if self.bits >= 8:
            return int.from_bytes(self.rd(blk + i * nbytes, nbytes), "big")
        bit = i * self.bits
        return (self.rd(blk + bit // 8, 1)[0] >> (bit % 8)) & ((1 << self.bits) - 1)

    def setref(self, c, v):
        blk, i = self.refslot(c)
        if self.bits < 8:
            sys.exit("sub-byte refcounts not supported here")
        n = self.bits // 8
        self.wr(blk + i * n, v.to_bytes(n, "big"))

    def l2slot(self, guest):
        l2_bits = self.cluster_bits - 3
        l1i = guest >> (self.cluster_bits + l2_bits)
        l2 = self.q(self.l1_off + l1i * 8) & 0x00fffffffffffe00
        if not l2:
            sys.exit("no L2 table for guest offset %d" % guest)
        return l2 + ((guest >> self.cluster_bits) & ((1 << l2_bits) - 1)) * 8


def main():
    img = Img(sys.argv[1])
    cmd, a = sys.argv[2], [num(x) for x in sys.argv[3:]]
    if cmd == "getref":
        print(img.getref(a[0]))
    elif cmd == "setref":
        img.setref(a[0], a[1])
    elif cmd in ("l1", "l2", "reftable"):
        if cmd == "l1":
            off = img.l1_off + a[0] * 8
        elif cmd == "l2":
            off = img.l2slot(a[0])
        else:
            off = img.rt_off + a[0] * 8
        if len(a) > 1:
            img.wr(off, struct.pack(">Q", a[1]))
        else:
            print("0x%x" % img.q(off))
    elif cmd in ("l1-uncopy", "l2-uncopy"):
        off = img.l1_off + a[0] * 8 if cmd == "l1-uncopy" else img.l2slot(a[0])
        img.wr(off, struct.pack(">Q", img.q(off) & ~(1 << 63)))
    elif cmd == "hdr32":
        img.wr(a[0], struct.pack(">I", a[1]))
    elif cmd == "hdr64":
        img.wr(a[0], struct.pack(">Q", a[1]))
    elif cmd == "snap-l1size":
        off = img.snap_off
        for _ in range(a[0]):
            h = img.rd(off, 40)
            idl, nml = struct.unpack(">HH", h[12:16])
            (extra,) = struct.unpack(">I", h[36:40])
            off += (40 + extra + idl + nml + 7) & ~7
        img.wr(off + 8, struct.pack(">I", a[1]))
    else:
        sys.exit("unknown command " + cmd)


main()
