#!/bin/bash
# qcow2: images qemu-img / qemu-io make (compat 0.10 and 1.1, cluster sizes
# 512 to 2M, zero clusters, compressed zlib/zstd, backing chains of depth 3,
# lazy refcounts, extended L2, external data files, refcount_bits 1 and 64)
# read through coblk exactly as qemu-img converts them; coblk's random
# partial writes (16 in flight) into them and into images coblk creates
# read identically in qemu-img and pass qemu-img check with no leaks.
. "$(dirname "$0")/fmt-lib.sh"

# write_patterns IMG: qemu-io data, zero clusters and an unaligned tail.
write_patterns() {
    qemu-io -f qcow2 -c "write -P 0x11 0 64k" -c "write -P 0x22 70000 5000" \
        -c "write -z 131072 65536" -c "write -P 0x33 1M 1M" -c "write -z 1536k 64k" \
        -c "write -P 0x44 4193792 512" "$1" >/dev/null
}

# randwrite_checked IMG SEED: coblk writes; qemu agrees and checks it clean.
randwrite_checked() {
    qemu-img convert -f qcow2 -O raw "$1" "$T/exp.raw"
    "$FMTIO" randwrite qcow2 "$1" "$2" 48 "$T/exp.raw" || fail "randwrite $1"
    qemu_reads_as qcow2 "$1" "$T/exp.raw"
    qemu-img check -q "$1" || fail "qemu-img check after coblk writes to $1"
}

i=0
for o in compat=0.10 compat=1.1 cluster_size=512 cluster_size=4k cluster_size=2M \
         lazy_refcounts=on refcount_bits=1 refcount_bits=64 extended_l2=on \
         "extended_l2=on,cluster_size=32k" compression_type=zstd; do
    i=$((i + 1))
    img=$T/q$i.qcow2
    qemu-img create -q -f qcow2 -o "$o" "$img" 4M
    write_patterns "$img"
    coblk_reads_as_qemu qcow2 "$img"
    randwrite_checked "$img" $i
    echo "ok: qemu-img -o $o"
done

# Compressed clusters.
python3 -c "import sys
b=bytearray()
for i in range(3*1024*1024): b.append((i//4096)&0xff if (i//1000)%7 else (i*31)&0xff)
open(sys.argv[1],'wb').write(b)" "$T/src.raw"
for ct in zlib zstd; do
    qemu-img convert -c -O qcow2 -o compression_type=$ct "$T/src.raw" "$T/c.qcow2"
    coblk_reads_as_qemu qcow2 "$T/c.qcow2"
    randwrite_checked "$T/c.qcow2" 5
    echo "ok: compressed $ct, then overwritten"
done

# Backing chain of depth 3 with different cluster sizes.
qemu-img create -q -f qcow2 "$T/b0.qcow2" 4M
qemu-io -f qcow2 -c "write -P 0x61 0 4M" "$T/b0.qcow2" >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=4k -b "$T/b0.qcow2" -F qcow2 "$T/b1.qcow2"
qemu-io -f qcow2 -c "write -P 0x62 65536 65536" -c "write -z 262144 4096" "$T/b1.qcow2" >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=512 -b "$T/b1.qcow2" -F qcow2 "$T/b2.qcow2" 5M
qemu-io -f qcow2 -c "write -P 0x63 100000 3000" "$T/b2.qcow2" >/dev/null
coblk_reads_as_qemu qcow2 "$T/b2.qcow2"
randwrite_checked "$T/b2.qcow2" 9
echo "ok: backing chain of depth 3"

# External data file (and data_file_raw).
for raw in off on; do
    qemu-img create -q -f qcow2 -o data_file="$T/d-$raw.data",data_file_raw=$raw \
        "$T/d-$raw.qcow2" 4M
    write_patterns "$T/d-$raw.qcow2"
    coblk_reads_as_qemu qcow2 "$T/d-$raw.qcow2"
    randwrite_checked "$T/d-$raw.qcow2" 3
    echo "ok: data_file_raw=$raw"
done

# Images coblk creates.
for o in "" compat=0.10 cluster_size=512 cluster_size=2M refcount_bits=1 refcount_bits=64 \
         lazy_refcounts=on extended_l2=on compression_type=zstd preallocation=metadata \
         preallocation=full "data_file=$T/cd.data" "data_file=$T/cr.data,data_file_raw=on"; do
    img=$T/c.qcow2
    rm -f "$img"
    "$FMTIO" create qcow2 "$img" "size=5M${o:+,$o}" || fail "create $o"
    qemu-img check -q "$img" || fail "qemu-img check of a new image ($o)"
    : > "$T/exp.raw"; truncate -s 5M "$T/exp.raw"
    "$FMTIO" randwrite qcow2 "$img" 42 64 "$T/exp.raw" || fail "randwrite ($o)"
    qemu_reads_as qcow2 "$img" "$T/exp.raw"
    qemu-img check -q "$img" || fail "qemu-img check after writes ($o)"
    coblk_reads_as_qemu qcow2 "$img"
    echo "ok: coblk create ${o:-defaults}"
done

# coblk overlay over a qemu-made base: partial writes COW from the backing file.
qemu-img create -q -f qcow2 "$T/base.qcow2" 4M
qemu-io -f qcow2 -c "write -P 0x7a 0 4M" "$T/base.qcow2" >/dev/null
"$FMTIO" create qcow2 "$T/top.qcow2" "backing_file=$T/base.qcow2,backing_fmt=qcow2" || fail top
qemu-img convert -O raw "$T/top.qcow2" "$T/exp.raw"
"$FMTIO" randwrite qcow2 "$T/top.qcow2" 11 64 "$T/exp.raw" || fail "randwrite overlay"
qemu_reads_as qcow2 "$T/top.qcow2" "$T/exp.raw"
qemu-img check -q "$T/top.qcow2" || fail "qemu-img check overlay"
echo "ok: coblk overlay over a qemu base"

# Allocating writes into new clusters past the end of the file skip writing
# their zero COW head/tail (the file reads as zero there). A freed cluster
# that is reused still holds old data: its COW parts must be written.
qemu-img create -q -f qcow2 "$T/f.qcow2" 8M
: > "$T/exp.raw"; truncate -s 8M "$T/exp.raw"
put() { # OFF LEN BYTE: coblk writes, and the expected raw image
    "$FMTIO" write qcow2 "$T/f.qcow2" $1 $2 $3 || fail "write $1"
    python3 -c "import sys; f=open(sys.argv[1],'r+b'); f.seek(int(sys.argv[2],0));
f.write(bytes([int(sys.argv[4],0)])*int(sys.argv[3],0))" "$T/exp.raw" $1 $2 $3
}
put 0x13000 0x1000 0x5a         # middle of a new cluster
put 0x2f000 0x3000 0x5b         # across two new clusters
put 0x7f0000 0x10000 0x5c       # the last guest cluster, whole
put 0x100000 0x10000 0x5d       # a whole cluster, then freed below
qemu_reads_as qcow2 "$T/f.qcow2" "$T/exp.raw"
qemu-img check -q "$T/f.qcow2" || fail "qemu-img check after writes into new clusters"
qemu-io -f qcow2 -c "discard 0x100000 0x10000" "$T/f.qcow2" >/dev/null
truncate -s 0 "$T/exp.raw"; truncate -s 8M "$T/exp.raw"
qemu-img convert -f qcow2 -O raw "$T/f.qcow2" "$T/exp.raw"
put 0x405000 0x1000 0x5e        # may reuse the freed cluster: COW parts read zero
put 0x50f000 0x800 0x5f
qemu_reads_as qcow2 "$T/f.qcow2" "$T/exp.raw"
coblk_reads_as_qemu qcow2 "$T/f.qcow2"
qemu-img check -q "$T/f.qcow2" || fail "qemu-img check after reusing a freed cluster"
echo "ok: writes into new and reused clusters"
