#!/usr/bin/env python3
"""Builds small bochs, cloop and dmg images (formats qemu-img reads but cannot
create), each with the raw disk it holds, plus corrupt variants.

    mk-ro-images.py OUT-DIR [small]

writes OUT-DIR/<name>.<fmt> with OUT-DIR/<name>.raw for every valid image,
OUT-DIR/<name>.<fmt> for every corrupt one, and OUT-DIR/manifest.tsv with one
line per image: kind (ok | open | read), format, file, and for corrupt images
the words the error must contain (open: opening fails; read: opening works,
reading fails). "small" makes tiny images (fuzzing seeds; the corrupt
variants' expected words then do not all apply). Written from the formats'
public descriptions; deterministic.
"""
import base64
import bz2
import lzma
import os
import random
import struct
import sys
import zlib

OUT = sys.argv[1] if len(sys.argv) > 1 else '.'
SMALL = len(sys.argv) > 2 and sys.argv[2] == 'small'
MANIFEST = []


def pattern(seed, n):
    """n bytes of a deterministic, incompressible pattern."""
    return random.Random(seed).randbytes(n)


def text(seed, n):
    """n bytes of compressible text (numbered lines)."""
    out, size, i = [], 0, 0
    while size < n:
        out.append(('coblk read-only format test %d, line %d: the quick brown fox\n'
                    % (seed, i)).encode() * 4)
        size += len(out[-1])
        i += 1
    return b''.join(out)[:n]


def write_sparse(path, data):
    """Writes data, leaving all-zero 64 KiB pieces as holes."""
    zero = bytes(65536)
    with open(path, 'wb') as f:
        for i in range(0, len(data), 65536):
            piece = data[i:i + 65536]
            if piece == zero[:len(piece)]:
                f.seek(len(piece), 1)
            else:
                f.write(piece)
        f.truncate(len(data))


def save(name, fmt, data, raw=None, kind='ok', words=''):
    path = os.path.join(OUT, name + '.' + fmt)
    write_sparse(path, data)
    if raw is not None:
        write_sparse(os.path.join(OUT, name + '.raw'), raw)
    MANIFEST.append((kind, fmt, os.path.basename(path), words))


# ---------------------------------------------------------------- bochs
def bochs(sectors_written, extent=64 << 10, catalog=64, disk=None, bitmap=None, v1=False,
          order=None, subtype=b'Growing', base=None):
    """A growing image (or a redolog over base); sectors_written maps sector -> 512 bytes."""
    disk = catalog * extent if disk is None else disk
    per = extent // 512
    bitmap = (per + 7) // 8 if bitmap is None else bitmap
    bitmap_bytes = (bitmap + 511) // 512 * 512
    h = bytearray(512)
    h[0:22] = b'Bochs Virtual HD Image'
    h[32:39] = b'Redolog'
    h[48:48 + len(subtype)] = subtype
    ver = 0x00010000 if v1 else 0x00020000
    struct.pack_into('<IIIII', h, 64, ver, 512, catalog, bitmap, extent)
    struct.pack_into('<Q', h, 84 if v1 else 88, disk)
    used = sorted({s // per for s in sectors_written})
    order = order or list(reversed(used))      # blocks in the file in another order
    cat = [0xffffffff] * catalog
    for n, ext in enumerate(order):
        cat[ext] = n
    blocks = bytearray(len(order) * (bitmap_bytes + extent))
    raw = bytearray(disk) if base is None else bytearray(base)
    for s, data in sectors_written.items():
        ext, i = divmod(s, per)
        base = order.index(ext) * (bitmap_bytes + extent)
        blocks[base + i // 8] |= 1 << (i % 8)
        off = base + bitmap_bytes + i * 512
        blocks[off:off + 512] = data
        raw[s * 512:(s + 1) * 512] = data
    # Sectors written in a block but with their bit clear must read zero.
    for ext in used:
        base = order.index(ext) * (bitmap_bytes + extent)
        for i in range(per):
            if not blocks[base + i // 8] & (1 << (i % 8)):
                off = base + bitmap_bytes + i * 512
                blocks[off:off + 512] = b'\xee' * 512
    body = bytes(h) + b''.join(struct.pack('<I', e) for e in cat)
    return body + bytes(blocks), bytes(raw)


def bochs_images():
    if SMALL:
        w = {0: pattern(1, 512), 7: pattern(2, 512), 20: pattern(3, 512)}
        img, raw = bochs(w, extent=4096, catalog=8)
        save('bochs-growing', 'bochs', img, raw)
        return
    w = {0: pattern(1, 512), 1: pattern(2, 512), 7: pattern(3, 512), 100: pattern(4, 512),
         127: pattern(5, 512), 128 * 10 + 3: pattern(6, 512), 128 * 63 + 127: pattern(7, 512)}
    for s in range(128 * 3, 128 * 4):
        w[s] = pattern(s, 512)
    img, raw = bochs(w)
    save('bochs-growing', 'bochs', img, raw)
    img1, raw1 = bochs(w, v1=True)
    save('bochs-v1', 'bochs', img1, raw1)
    # Extents of 4 MiB (8192 sectors): bitmap reads cross the 4096-sector step.
    wb = {s: pattern(s, 512) for s in list(range(4090, 4100)) + [8191, 5000]}
    img2, raw2 = bochs(wb, extent=4 << 20, catalog=2)
    save('bochs-big-extent', 'bochs', img2, raw2)

    def bad(name, words, *pokes):
        b = bytearray(img)
        for off, fmt, v in pokes:
            if isinstance(v, bytes):
                b[off:off + 16] = v.ljust(16, b'\0')
            else:
                struct.pack_into(fmt, b, off, v)
        save('bad-' + name, 'bochs', bytes(b), kind='open', words=words)
    bad('extent-0', 'extent size 0 ', (80, '<I', 0))
    bad('extent-odd', 'extent size 1000 ', (80, '<I', 1000))
    bad('extent-huge', 'extent size 2147483648', (80, '<I', 1 << 31))
    bad('catalog-0', 'catalog size 0 ', (72, '<I', 0))
    bad('catalog-huge', 'catalog size 4294967295', (72, '<I', 0xffffffff))
    bad('catalog-past-eof', 'past the end of the file', (72, '<I', 1000000))
    bad('bitmap-0', 'bitmap size 0 ', (76, '<I', 0))
    bad('bitmap-small', 'bitmap size 1 ', (76, '<I', 1))
    bad('bitmap-huge', 'bitmap size 4294967295', (76, '<I', 0xffffffff))
    bad('disk-size', 'exceeds catalog size', (88, '<Q', 1 << 40))
    bad('subtype', "subtype 'Frozen' is not supported", (48, None, b'Frozen'))
    # Undoable / volatile redologs over a flat base: unwritten sectors are the base's.
    base = pattern(50, 64 * 64 << 10)
    wu = {s: pattern(1000 + s, 512) for s in [0, 5, 127, 128, 1000, 4095]}
    u, uraw = bochs(wu, subtype=b'Undoable', base=base)
    write_sparse(os.path.join(OUT, 'undo-base.img'), base)
    write_sparse(os.path.join(OUT, 'undo-base.img.redolog'), u)
    write_sparse(os.path.join(OUT, 'undo-base.img.raw'), uraw)
    MANIFEST.append(('ok', 'bochs', 'undo-base.img.redolog', ''))
    v, _ = bochs(wu, subtype=b'Volatile', base=base)
    save('bochs-volatile', 'bochs', v, kind='aux')   # base=undo-base.img (unit test)
    save('bad-undoable-name', 'bochs', u, kind='open',
         words="a Bochs 'Undoable' redolog reads unwritten sectors from its base image")
    bad('type', 'is not a Bochs redolog image', (32, None, b'Redo'))
    bad('version', 'unsupported Bochs version 0x00030000', (64, '<I', 0x00030000))
    bad('header-size', 'header size 0 ', (68, '<I', 0))
    bad('header-size-huge', 'header size 4294967295', (68, '<I', 0xffffffff))
    bad('entry', 'catalog entry 5 (block 4096', (512 + 20, '<I', 4096))
    save('bad-short', 'bochs', img[:100], kind='open', words='too short for a Bochs header')


# ---------------------------------------------------------------- cloop
CLOOP_PREAMBLE = (b'#!/bin/sh\n#V2.0 Format\n'
                  b'modprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n')


def cloop(blocks, block_size, preamble=CLOOP_PREAMBLE, n_blocks=None, fix=None, size=None):
    comp = [zlib.compress(b, 9) for b in blocks]
    n = len(blocks) if n_blocks is None else n_blocks
    off = 128 + 8 + 8 * (len(blocks) + 1)
    offs = [off]
    for c in comp:
        off += len(c)
        offs.append(off)
    if fix:
        fix(offs)
    hdr = preamble.ljust(128, b'\0') + struct.pack('>II', block_size, n & 0xffffffff)
    return hdr + b''.join(struct.pack('>Q', o) for o in offs) + b''.join(comp)


CLOOP4_PREAMBLE = CLOOP_PREAMBLE.replace(b'V2.0', b'V4.0')
CLOOP4_FLAGS = {'zlib': 0, 'none': 1, 'xz': 2, 'lz4': 3, 'lzo': 4, 'bad': 7}
CLOOP3_FLAGS = {'none': 0, 'zlib': 2, 'lzo': 4, 'xz': 8, 'lz4': 16, 'bad': 3}


def cloop_pack(block, how):
    if how == 'zlib':
        return zlib.compress(block, 9)
    if how == 'xz':
        return lzma.compress(block, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    return block       # none, and stand-ins for lz4 / lzo / unknown (refused at open)


def cloop4(blocks, hows, block_size, last=False, n_blocks=None, fix=None):
    """Version 4: the header first (index after it) or last (index before it)."""
    comp = [cloop_pack(b, h) for b, h in zip(blocks, hows)]
    table = 8 * (len(blocks) + 1)
    off = 0 if last else 136 + table
    offs = []
    for c in comp:
        offs.append(off)
        off += len(c)
    offs.append(off)
    ents = [o | (CLOOP4_FLAGS[h] << 60) for o, h in zip(offs, hows)] + [offs[-1]]
    if fix:
        fix(ents)
    n = len(blocks) if n_blocks is None else n_blocks
    hdr = CLOOP4_PREAMBLE.ljust(128, b'\0') + struct.pack('>II', block_size, n & 0xffffffff)
    index = b''.join(struct.pack('>Q', e) for e in ents)
    data = b''.join(comp)
    return data + index + hdr if last else hdr + index + data


def cloop3(blocks, hows, block_size, size, version=3, index_fix=0, flags_fix=None):
    """Version 3: blocks, the index (n, block size, size, offsets, flags), the footer."""
    comp = [cloop_pack(b, h) for b, h in zip(blocks, hows)]
    offs, off = [], 0
    for c in comp:
        offs.append(off)
        off += len(c)
    offs.append(off)
    flags = [CLOOP3_FLAGS[h] for h in hows]
    if flags_fix:
        flags_fix(flags)
    data = b''.join(comp) + b'\0' * (-off % 4096)
    index = (struct.pack('>IIQ', len(blocks), block_size, size) +
             b''.join(struct.pack('>Q', o) for o in offs) +
             b''.join(struct.pack('>I', f) for f in flags))
    return data + index + struct.pack('>QI', len(data) + index_fix, version) + b'\nCLOOP3\n'


def cloop_v34_images():
    bs = 16 << 10
    blocks = [text(200 + i, bs) if i % 3 else pattern(300 + i, bs) for i in range(6)]
    hows = ['zlib', 'none', 'zlib', 'xz', 'none', 'xz']
    raw = b''.join(blocks)
    save('cloop-v4', 'cloop', cloop4(blocks, hows, bs), raw)
    if SMALL:
        return
    # Footer images (not probed: opened with an explicit format).
    save('cloop-v4-last', 'cloop', cloop4(blocks, hows, bs, last=True), raw, kind='okx')
    size = 5 * bs + 5000
    last = blocks[5][:5000]
    v3 = blocks[:5] + [last]
    disk = b''.join(v3) + bytes(-size % 512)
    save('cloop-v3', 'cloop', cloop3(v3, hows, bs, size), disk, kind='okx')
    # The last block stored whole (padded to the block size): also accepted.
    padded = blocks[:5] + [last + bytes(bs - 5000)]
    save('cloop-v3-padded', 'cloop', cloop3(padded, ['zlib'] * 6, bs, size), disk, kind='okx')

    def bad(name, words, img, kind='open'):
        save('bad-' + name, 'cloop', img, kind=kind, words=words)
    bad('v4-lz4', 'block 1 is stored with lz4, which coblk does not support',
        cloop4(blocks, ['zlib', 'lz4'] + hows[2:], bs))
    bad('v4-unknown', 'block 2 is stored with an unknown compressor',
        cloop4(blocks, ['zlib', 'none', 'bad'] + hows[3:], bs))
    bad('v4-stored-size', 'block 1 has offsets',
        cloop4(blocks[:1] + [blocks[1][:1000]] + blocks[2:], hows, bs))
    bad('v4-last-table', 'ends past the end of the file',
        cloop4(blocks, hows, bs, last=True, n_blocks=1 << 24))

    def past(e):
        e[-1] = 1 << 40
    bad('v4-offset-past-eof', 'does not lie between the offsets table',
        cloop4(blocks, hows, bs, fix=past))
    bad('v3-version', 'cloop footer version 4 is not supported',
        cloop3(v3, hows, bs, size, version=4))
    bad('v3-index', 'does not lie before the footer', cloop3(v3, hows, bs, size, index_fix=1 << 40))
    bad('v3-size', 'uncompressed size 81920 does not end in the last of 6 blocks',
        cloop3(v3, hows, bs, 5 * bs))
    bad('v3-size-huge', 'uncompressed size 98305 does not end in the last of 6 blocks',
        cloop3(v3, hows, bs, 6 * bs + 1))

    def badflag(f):
        f[4] = 3
    bad('v3-flags', 'block 4 is stored with an unknown compressor',
        cloop3(v3, hows, bs, size, flags_fix=badflag))
    bad('v3-lzo', 'block 2 is stored with lzo', cloop3(v3, hows[:2] + ['lzo'] + hows[3:], bs, size))
    # A damaged xz block: opens, reading it fails.
    img = bytearray(cloop4(blocks, hows, bs))
    start = struct.unpack_from('>Q', img, 136 + 8 * 3)[0] & ((1 << 60) - 1)
    img[start + 30:start + 40] = b'\xff' * 10
    bad('v4-xz-stream', '', bytes(img), kind='read')


def cloop_images():
    bs = 1024 if SMALL else 16 << 10
    blocks = []
    for i in range(4 if SMALL else 20):
        if i % 5 == 0:
            blocks.append(bytes(bs))
        elif i % 3 == 0:
            blocks.append(pattern(100 + i, bs))
        else:
            blocks.append(text(i, bs))
    img = cloop(blocks, bs)
    save('cloop-v2', 'cloop', img, b''.join(blocks))
    if SMALL:
        return

    def bad(name, words, kind='open', **kw):
        args = dict(block_size=bs)
        args.update(kw)
        save('bad-' + name, 'cloop', cloop(blocks, **args), kind=kind, words=words)
    bad('blocksize-0', 'block size 0 ', block_size=0)
    bad('blocksize-odd', 'block size 1000 ', block_size=1000)
    bad('blocksize-huge', 'block size 134217728', block_size=128 << 20)
    bad('nblocks-0', 'number of blocks 0 ', n_blocks=0)
    bad('nblocks-huge', 'number of blocks 4294967295', n_blocks=0xffffffff)
    bad('table-past-eof', 'past the end of the file', n_blocks=1000000)

    def swap(o):
        o[3], o[4] = o[4], o[3]
    bad('offsets-decreasing', 'block 3 has offsets', fix=swap)

    def past(o):
        o[-1] = 1 << 40
    bad('offset-past-eof', 'end of the file', fix=past)

    def huge(o):
        o[1] = o[-1]
    bad('compressed-huge', 'block 0 has offsets', fix=huge)

    def early(o):
        o[0] = 8
    bad('offset-in-table', 'does not lie between the offsets table', fix=early)
    bad('version', "cloop version 'V5.0'", preamble=b'#!/bin/sh\n#V5.0 Format\n')
    # A damaged zlib stream: opens, reading that block fails.
    b = bytearray(img)
    start = struct.unpack_from('>Q', b, 136 + 8 * 2)[0]
    b[start + 2:start + 12] = b'\xff' * 10
    save('bad-stream', 'cloop', bytes(b), kind='read', words='')
    save('bad-short', 'cloop', img[:100], kind='open', words='too short for a cloop header')


# ---------------------------------------------------------------- dmg
ZERO, RAW, IGNORE, ADC, ZLIB, BZ2, LZFSE, COMMENT, LAST = (
    0, 1, 2, 0x80000004, 0x80000005, 0x80000006, 0x80000007, 0x7ffffffe, 0xffffffff)


def mish(first, sectors, chunks, n_chunks=None):
    """chunks: (type, first sector relative, count, data offset, data length)."""
    m = bytearray(204)
    m[0:4] = b'mish'
    struct.pack_into('>IQQQII', m, 4, 1, first, sectors, 0, 0, len(chunks))
    struct.pack_into('>I', m, 200, len(chunks) if n_chunks is None else n_chunks)
    for t, s, n, off, ln in chunks:
        m += struct.pack('>IIQQQQ', t, 0, s, n, off, ln)
    return bytes(m)


def plist(mishes, extra=b''):
    x = [b'<?xml version="1.0" encoding="UTF-8"?>\n',
         b'<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" '
         b'"http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n',
         b'<plist version="1.0">\n<dict>\n\t<key>resource-fork</key>\n\t<dict>\n',
         b'\t\t<key>blkx</key>\n\t\t<array>\n']
    for i, m in enumerate(mishes):
        b64 = base64.b64encode(m)
        lines = b'\n'.join(b'\t\t\t\t' + b64[j:j + 52] for j in range(0, len(b64), 52))
        x.append(b'\t\t\t<dict>\n\t\t\t\t<key>Attributes</key>\n\t\t\t\t<string>0x0050</string>\n'
                 b'\t\t\t\t<key>Data</key>\n\t\t\t\t<data>\n' + lines + b'\n\t\t\t\t</data>\n'
                 b'\t\t\t\t<key>ID</key>\n\t\t\t\t<string>%d</string>\n\t\t\t</dict>\n' % i)
    x.append(b'\t\t</array>\n' + extra + b'\t</dict>\n</dict>\n</plist>\n')
    return b''.join(x)


def rsrc_fork(mishes, data_len_fix=None, entry_len_fix=None):
    data = b''
    for i, m in enumerate(mishes):
        n = len(m) if entry_len_fix is None or i else entry_len_fix
        data += struct.pack('>I', n) + m
    dlen = len(data) if data_len_fix is None else data_len_fix
    hdr = struct.pack('>IIII', 256, 256 + len(data), dlen, 30).ljust(256, b'\0')
    return hdr + data + b'\0' * 30


def koly(sectors, data_len, xml_off=0, xml_len=0, rsrc_off=0, rsrc_len=0, magic=b'koly',
         data_fork=0):
    k = bytearray(512)
    k[0:4] = magic
    struct.pack_into('>IIIQQQQQ', k, 4, 4, 512, 1, 0, data_fork, data_len, rsrc_off, rsrc_len)
    struct.pack_into('>II', k, 56, 1, 1)
    struct.pack_into('>QQ', k, 216, xml_off, xml_len)
    struct.pack_into('>I', k, 488, 1)
    struct.pack_into('>Q', k, 492, sectors)
    return bytes(k)


def dmg_layout(bz=False):
    """Two blkx blocks of 8 units: (data fork, mish blocks, raw disk)."""
    u = 2 if SMALL else 256      # sectors
    disk = bytearray(16 * u * 512)
    fork = bytearray()
    a, b = [], []

    def data(lst, t, first, s, n, content, packed):
        lst.append((t, s, n, len(fork), len(packed)))
        fork.extend(packed)
        disk[(first + s) * 512:(first + s + n) * 512] = content

    c = text(1, u * 512)
    data(a, ZLIB, 0, 0, u, c, zlib.compress(c))
    c = pattern(2, u * 512)
    data(a, RAW, 0, u, u, c, c)
    a.append((ZERO, 2 * u, 2 * u, 0, 0))
    a.append((COMMENT, 0, 0, 0, 0))
    a.append((IGNORE, 4 * u, u, 0, 0))
    c = pattern(3, 3 * u * 512)
    data(a, ZLIB, 0, 5 * u, 3 * u, c, zlib.compress(c))
    a.append((LAST, 8 * u, 0, 0, 0))
    c = text(4, 8 * u * 512)
    h = 4 * u * 512
    if bz:
        data(b, BZ2, 8 * u, 0, 8 * u, c, bz2.compress(c))
    else:
        data(b, ZLIB, 8 * u, 0, 4 * u, c[:h], zlib.compress(c[:h]))
        data(b, RAW, 8 * u, 4 * u, 4 * u, c[h:], c[h:])
    b.append((LAST, 8 * u, 0, 0, 0))
    return bytes(fork), [mish(0, 8 * u, a), mish(8 * u, 8 * u, b)], bytes(disk)


def dmg_xml(fork, mishes, sectors=None, extra=b'', xml=None, xml_len=None, **kw):
    x = plist(mishes, extra) if xml is None else xml
    sectors = (32 if SMALL else 4096) if sectors is None else sectors
    return fork + x + koly(sectors, len(fork), len(fork),
                           len(x) if xml_len is None else xml_len, **kw)


def dmg_images():
    fork, mishes, disk = dmg_layout()
    img = dmg_xml(fork, mishes)
    save('dmg-zlib', 'dmg', img, disk)
    bfork, bmishes, bdisk = dmg_layout(bz=True)
    save('dmg-bzip2', 'dmg', dmg_xml(bfork, bmishes), bdisk)
    r = rsrc_fork(mishes)
    save('dmg-rsrc', 'dmg', fork + r + koly(len(disk) // 512, len(fork), rsrc_off=len(fork),
                                            rsrc_len=len(r)), disk)
    if SMALL:
        return

    # Corrupt variants fail before any chunk data is read: a short data fork.
    def bad(name, words, kind='open', **kw):
        save('bad-' + name, 'dmg', dmg_xml(fork[:4096], **kw), kind=kind, words=words)
    a = mishes[0]
    def chunk0(t=ZLIB, s=0, n=256, off=0, ln=None):
        ln = len(zlib.compress(text(1, 256 * 512))) if ln is None else ln
        return [mish(0, 4096, [(t, s, n, off, ln)])]
    bad('koly-magic', 'is not a dmg image', mishes=mishes, magic=b'kolx')
    bad('plist-len', 'XML plist at', mishes=mishes, xml_len=1 << 40)
    bad('plist-huge', 'larger than 16777216', mishes=mishes, xml_len=17 << 20)
    bad('no-map', 'neither a resource fork nor an XML plist', mishes=mishes, xml_len=0)
    bad('no-blkx', 'no blkx array', mishes=mishes, xml=b'<plist><dict></dict></plist>')
    x = plist(mishes).replace(b'<data>\n\t\t\t\t', b'<data>\n\t\t\t\t*', 1)
    bad('base64', 'bad base64', mishes=mishes, xml=x)
    x = plist(mishes).replace(b'<data>', b'<data>', 1).replace(b'</data>', b'', 2)
    bad('data-open', 'unterminated <data>', mishes=mishes, xml=x)
    bad('mish-short', 'shorter than its 204-byte header', mishes=[a[:100]])
    bad('mish-nchunks', 'claims 4294967295 chunks', mishes=[mish(0, 2048, [], 0xffffffff)])
    bad('chunk-sectors-huge', 'data chunks hold at most', mishes=chunk0(n=200000), sectors=200000)
    bad('chunk-len-huge', 'data chunks hold at most', mishes=chunk0(ln=65 << 20))
    bad('chunk-past-eof', 'lies outside the file', mishes=chunk0(off=1 << 40))
    bad('chunk-past-disk', 'lies outside the disk', mishes=chunk0(s=4000))
    bad('chunk-sector-overflow', 'lies outside the disk',
        mishes=[mish(0xffffffffffffff00, 1, [(ZERO, 0x200, 1, 0, 0)])])
    bad('overlap', 'overlap', mishes=[mish(0, 4096, [(ZERO, 0, 100, 0, 0), (ZERO, 50, 10, 0, 0)])])
    bad('lzfse', '0x80000007 (LZFSE compression)', mishes=chunk0(t=LZFSE))
    bad('unknown-type', '0x12345678 (unknown type)', mishes=chunk0(t=0x12345678))
    bad('raw-len', 'raw chunks exactly', mishes=chunk0(t=RAW, ln=1000))
    bad('sectors-huge', 'sector count 4611686018427387904', mishes=mishes, sectors=1 << 62)
    bad('no-chunks', 'the block map has no chunks', mishes=[mish(0, 0, [])])
    r = rsrc_fork(mishes, data_len_fix=1 << 20)
    save('bad-rsrc-area', 'dmg', fork + r + koly(4096, len(fork), rsrc_off=len(fork),
         rsrc_len=len(r)), kind='open', words='resource fork data area')
    r = rsrc_fork(mishes, entry_len_fix=1 << 20)
    save('bad-rsrc-entry', 'dmg', fork + r + koly(4096, len(fork), rsrc_off=len(fork),
         rsrc_len=len(r)), kind='open', words='past the data area')
    # A damaged zlib chunk: opens, reading it fails.
    b = bytearray(img)
    b[10:30] = b'\xff' * 20
    save('bad-stream', 'dmg', bytes(b), kind='read', words='')
    save('bad-short', 'dmg', img[-100:], kind='open', words='too short for a dmg trailer')


os.makedirs(OUT, exist_ok=True)
bochs_images()
cloop_images()
cloop_v34_images()
dmg_images()
with open(os.path.join(OUT, 'manifest.tsv'), 'w') as f:
    for row in MANIFEST:
        f.write('\t'.join(row) + '\n')
