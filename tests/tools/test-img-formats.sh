#!/usr/bin/env bash
# coblk-img on every image format that both coblk and qemu-img know (qcow2,
# vmdk, vpc, vdi, qed, vhdx, parallels, qcow as their drivers land):
# create (qemu-img check accepts it), info JSON fields, map data ranges,
# compare exit codes and messages, check exit codes, convert both ways
# (qemu-img compare finds the copies identical), and for formats with
# backing files: info --backing-chain, map JSON, commit and rebase.
. "$(dirname "$0")/lib.sh"

FORMATS=$("$CIMG" --help | sed -n 's/^Supported formats://p')
have() { case " $FORMATS " in *" $1 "*) return 0 ;; esac; return 1; }

# Data byte ranges of a map --output=json, merged.
data_ranges() {
    jq -c '[.[] | select(.data) | [.start, .start + .length]] |
           reduce .[] as $r ([]; if length > 0 and .[-1][1] == $r[0]
                                 then .[-1][1] = $r[1] else . + [$r] end)' "$1"
}

qemu-img create -q -f raw src.raw 8M
qemu-io -f raw -c 'write -P 0xab 0 64k' -c 'write -P 0x11 1M 300k' -c 'write -P 0x22 5M 4k' \
    -c 'write -P 0x33 8188k 4k' src.raw >/dev/null

tested=0
for F in qcow2 vmdk vpc vdi qed vhdx parallels qcow; do
    have $F || continue
    tested=$((tested + 1))
    echo "== $F"
    # create
    rm -f c.$F q.$F
    if ! "$CIMG" create -q -f $F c.$F 8M 2>err.txt; then
        grep -q "does not support image creation" err.txt && { echo "  $F: no create"; continue; }
        fail "$F: create: $(cat err.txt)"
        continue
    fi
    qemu-img create -q -f $F q.$F 8M
    qemu-img check -q c.$F 2>/dev/null; qr=$?
    [ $qr = 0 ] || [ $qr = 63 ] && pass "$F: qemu-img check accepts a created image" ||
        fail "$F: qemu-img check of a created image: rc $qr"
    [ "$(qemu-img info --output=json c.$F | jq '.["virtual-size"]')" = \
      "$(qemu-img info --output=json q.$F | jq '.["virtual-size"]')" ] &&
        pass "$F: created virtual size" || fail "$F: created virtual size differs"

    # an image written by qemu-io
    qemu-img convert -f raw -O $F src.raw q.$F
    qemu-img info --output=json q.$F | jq -S '{"virtual-size", format, "cluster-size",
        "dirty-flag", "backing-filename"}' >q.json
    "$CIMG" info --output=json q.$F | jq -S '{"virtual-size", format, "cluster-size",
        "dirty-flag", "backing-filename"}' >c.json
    if [ "$(jq '.["cluster-size"]' q.json)" = null ] && [ "$F" = parallels ]; then
        # qemu-img 7.2 has no info for parallels beyond the size; coblk reports
        # the cluster size from the header (1 MiB by default) and the in-use flag.
        jq -e '.["cluster-size"] == 1048576 and .["dirty-flag"] == false' c.json >/dev/null &&
            pass "$F: info cluster-size and dirty-flag" || fail "$F: info cluster-size / dirty-flag"
        jq -S '.["cluster-size"] = null | .["dirty-flag"] = null' c.json >c2.json && mv c2.json c.json
    fi
    same_output "$F: info json fields" q.json c.json
    qemu-img map --output=json q.$F >q.map; "$CIMG" map --output=json q.$F >c.map
    [ "$(data_ranges q.map)" = "$(data_ranges c.map)" ] && pass "$F: map data ranges" ||
        fail "$F: map data ranges: qemu $(data_ranges q.map) coblk $(data_ranges c.map)"

    # compare
    expect_rc 0 "$F: compare with the raw source" "$CIMG" compare -F raw q.$F src.raw
    cp q.$F m.$F
    qemu-io -c 'write -P 0x44 4194310 3' m.$F >/dev/null
    qemu-img compare q.$F m.$F >q.txt; qr=$?
    "$CIMG" compare q.$F m.$F >c.txt; cr=$?
    [ $qr = $cr ] && pass "$F: compare rc $cr" || fail "$F: compare rc qemu $qr coblk $cr"
    same_output "$F: compare message" q.txt c.txt

    # check: same verdict in the JSON report where both can check the format
    qemu-img check --output=json q.$F >q.json 2>/dev/null && "$CIMG" check --output=json q.$F >c.json 2>/dev/null &&
        { diff <(jq -S '{corruptions, leaks, "check-errors", filename, format}' q.json) \
               <(jq -S '{corruptions, leaks, "check-errors", filename, format}' c.json) >/dev/null &&
          pass "$F: check json verdict" || fail "$F: check json verdict differs"; }
    qemu-img check q.$F >/dev/null 2>&1; qr=$?
    "$CIMG" check q.$F >/dev/null 2>&1; cr=$?
    if [ $cr = 63 ] && [ $qr != 63 ]; then
        echo "  note: coblk's $F driver has no check yet (qemu-img: rc $qr)"
    elif [ $qr = 63 ]; then
        [ $cr = 0 ] && pass "$F: check (qemu-img cannot check $F)" || fail "$F: check rc $cr"
    else
        [ $qr = $cr ] && pass "$F: check rc $cr" || fail "$F: check rc qemu $qr coblk $cr"
    fi

    # convert both ways
    rm -f cv.$F
    "$CIMG" convert -f raw -O $F src.raw cv.$F && pass "$F: convert raw -> $F" ||
        fail "$F: convert raw -> $F"
    expect_rc 0 "$F: converted image identical (qemu-img compare)" qemu-img compare -F raw cv.$F src.raw
    qemu-img check -q cv.$F 2>/dev/null; qr=$?
    [ $qr = 0 ] || [ $qr = 63 ] && pass "$F: qemu-img check accepts the converted image" ||
        fail "$F: qemu-img check of converted image: rc $qr"
    qemu-img convert -O raw q.$F qback.raw
    "$CIMG" convert -O raw q.$F back.raw && cmp back.raw qback.raw && pass "$F: convert $F -> raw" ||
        fail "$F: convert $F -> raw differs from qemu-img's"
    # compressed convert, where the format has compressed clusters
    rm -f cc.$F
    if "$CIMG" convert -c -f raw -O $F src.raw cc.$F 2>err.txt; then
        qemu-img compare -q -F raw cc.$F src.raw && pass "$F: convert -c identical" ||
            fail "$F: convert -c differs"
        qemu-img check -q cc.$F 2>/dev/null; qr=$?
        [ $qr = 0 ] || [ $qr = 63 ] && pass "$F: qemu-img check accepts convert -c" ||
            fail "$F: convert -c: qemu-img check rc $qr"
    else
        grep -q "Compression not supported" err.txt && echo "  note: $F: no compressed writes" ||
            fail "$F: convert -c: $(cat err.txt)"
    fi

    # resize
    cp q.$F rq.$F; cp q.$F rc.$F
    if "$CIMG" resize -q rc.$F +1M 2>err.txt; then
        got=$(qemu-img info --output=json rc.$F | jq '.["virtual-size"]')
        if qemu-img resize -q rq.$F +1M 2>/dev/null; then
            [ "$got" = "$(qemu-img info --output=json rq.$F | jq '.["virtual-size"]')" ] &&
                pass "$F: resize +1M" || fail "$F: resize +1M: size differs from qemu-img's"
            qemu-img compare -q rq.$F rc.$F && pass "$F: resized content" ||
                fail "$F: resized content"
        else
            # qemu-img cannot resize this format (vdi, vpc, vmdk, vhdx, parallels in 7.2):
            # qemu-img reads the grown image, 1 MiB larger (vpc: rounded up to a whole CHS
            # geometry, less than one cylinder more), data unchanged, tail zero.
            want=$(( $(qemu-img info --output=json q.$F | jq '.["virtual-size"]') + 1048576 ))
            [ "$got" -ge "$want" ] && [ "$got" -lt $((want + 16 * 255 * 512)) ] &&
                pass "$F: resize +1M (qemu-img reads the new size)" ||
                fail "$F: resize +1M: size $got, expected $want"
            qemu-img compare -q q.$F rc.$F && pass "$F: resized content (qemu-img compare)" ||
                fail "$F: resized content"
            qemu-img check -q rc.$F 2>/dev/null; qr=$?
            [ $qr = 0 ] || [ $qr = 63 ] && pass "$F: qemu-img check after resize" ||
                fail "$F: qemu-img check after resize: rc $qr"
        fi
    else
        grep -qi "support\|not\|cannot" err.txt && echo "  note: $F: resize: $(cat err.txt)" ||
            fail "$F: resize: $(cat err.txt)"
    fi

    # measure, where the format can
    if "$CIMG" measure -O $F --output=json -f raw src.raw >c.json 2>/dev/null; then
        qemu-img measure -O $F --output=json -f raw src.raw >q.json
        same_json "$F: measure" q.json c.json
    else
        echo "  note: $F: no measure"
    fi

    # internal snapshots, where the format has them
    cp q.$F sn.$F
    if "$CIMG" snapshot -c first sn.$F 2>err.txt; then
        qemu-io -c 'write -P 0x55 0 64k' sn.$F >/dev/null
        "$CIMG" snapshot -c second sn.$F
        qemu-img snapshot -l sn.$F | awk 'NR > 2 {print $1, $2}' >q.txt
        "$CIMG" snapshot -l sn.$F | awk 'NR > 2 {print $1, $2}' >c.txt
        same_output "$F: snapshot -l" q.txt c.txt
        "$CIMG" snapshot -a first sn.$F && qemu-img compare -q q.$F sn.$F &&
            pass "$F: snapshot -a restores" || fail "$F: snapshot -a"
        "$CIMG" snapshot -d second sn.$F && ! qemu-img snapshot -l sn.$F | grep -q second &&
            pass "$F: snapshot -d" || fail "$F: snapshot -d"
        qemu-img check -q sn.$F && pass "$F: check after snapshots" ||
            fail "$F: qemu-img check after snapshots"
    else
        grep -q "does not support" err.txt && echo "  note: $F: no internal snapshots" ||
            fail "$F: snapshot -c: $(cat err.txt)"
    fi
done
[ $tested -gt 0 ] || echo "no image format besides raw is built yet"

# check on a corrupt vdi (two block map entries share a data block): exit 2 and
# qemu-img's lines; -r all repairs it and the double check is clean.
if have vdi; then
    qemu-img create -q -f vdi v.vdi 4M
    qemu-io -c 'write -P 1 0 1M' -c 'write -P 2 2M 1M' v.vdi >/dev/null
    bm=$(od -A n -t u4 -j $((0x154)) -N 4 v.vdi | tr -d ' ')
    printf '\x00\x00\x00\x00' | dd of=v.vdi bs=1 seek=$((bm + 8)) conv=notrunc status=none
    qemu-img check v.vdi >q.txt 2>/dev/null; qr=$?
    "$CIMG" check v.vdi >c.txt 2>/dev/null; cr=$?
    [ $qr = 2 ] && [ $cr = 2 ] && pass "vdi: corrupt image check rc 2" || fail "vdi check rc $qr/$cr"
    head -3 q.txt >q3.txt; head -3 c.txt >c3.txt
    same_output "vdi: corruption lines" q3.txt c3.txt
    "$CIMG" check --output=json v.vdi 2>/dev/null | jq -e '.corruptions == 1' >/dev/null &&
        pass "vdi: check json corruptions" || fail "vdi: check json corruptions"
    expect_rc 0 "vdi: check -r all repairs" "$CIMG" check -r all v.vdi
    grep -q "Double checking the fixed image now..." out.txt && pass "vdi: repair report" ||
        fail "vdi: repair report"
    expect_rc 0 "vdi: qemu-img check after repair" qemu-img check v.vdi
fi

# Backing files (formats whose create takes backing_file).
for F in qcow2 vmdk qed qcow; do
    have $F || continue
    rm -f base.$F top.$F
    qemu-img create -q -f $F base.$F 4M
    qemu-io -c 'write -P 1 0 1M' base.$F >/dev/null
    "$CIMG" create -q -f $F -b base.$F -F $F top.$F 2>err.txt || {
        echo "  $F: no backing files ($(cat err.txt))"; continue; }
    qemu-io -c 'write -P 2 512k 1M' top.$F >/dev/null
    for o in "map" "map --output=json"; do
        qemu-img $o top.$F >q.txt; "$CIMG" $o top.$F >c.txt
        same_output "$F: $o with a backing file" q.txt c.txt
    done
    qemu-img info --output=json --backing-chain top.$F |
        jq -S '[.[] | {filename, "backing-filename", "backing-filename-format", "virtual-size"}]' >q.json
    "$CIMG" info --output=json --backing-chain top.$F |
        jq -S '[.[] | {filename, "backing-filename", "backing-filename-format", "virtual-size"}]' >c.json
    same_output "$F: info --backing-chain" q.json c.json
    # convert of the chain gives its full content; -B keeps only the top's data
    "$CIMG" convert -O raw top.$F flat.raw
    expect_rc 0 "$F: convert flattens the chain" qemu-img compare -F raw top.$F flat.raw
    # convert -B: a new overlay of base holding only what the top allocates
    rm -f nb.$F
    if "$CIMG" convert -O $F -B base.$F -F $F top.$F nb.$F 2>err.txt; then
        expect_rc 0 "$F: convert -B content" qemu-img compare top.$F nb.$F
        qemu-img map --output=json nb.$F | jq -c '[.[] | select(.depth == 0 and .data) | .start]' >c.txt
        qemu-img map --output=json top.$F | jq -c '[.[] | select(.depth == 0 and .data) | .start]' >q.txt
        same_output "$F: convert -B copies only the top's data" q.txt c.txt
    else
        fail "$F: convert -B: $(cat err.txt)"
    fi
    # commit: the base gets the top's data
    cp base.$F b0.$F
    expect_rc 0 "$F: commit" "$CIMG" commit -d top.$F
    qemu-io -c 'read -P 1 0 512k' -c 'read -P 2 512k 1M' base.$F | grep -q "verification failed" &&
        fail "$F: committed base content" || pass "$F: committed base content"
    # commit -b through a three-layer chain, with progress
    rm -f l0.$F l1.$F l2.$F
    qemu-img create -q -f $F l0.$F 4M
    qemu-io -c 'write -P 1 0 4M' l0.$F >/dev/null
    qemu-img create -q -f $F -b l0.$F -F $F l1.$F
    qemu-io -c 'write -P 2 1M 1M' l1.$F >/dev/null
    qemu-img create -q -f $F -b l1.$F -F $F l2.$F
    qemu-io -c 'write -P 3 3M 64k' l2.$F >/dev/null
    qemu-img convert -O raw l2.$F chain.raw
    if "$CIMG" commit -p -b l0.$F l2.$F >out.txt 2>err.txt; then
        grep -q "Image committed." out.txt && grep -q "100.00/100%" err.txt &&
            pass "$F: commit -b -p" || fail "$F: commit -b -p output"
        expect_rc 0 "$F: commit -b content in the base" qemu-img compare -F raw l0.$F chain.raw
    else
        fail "$F: commit -b: $(cat err.txt)"
    fi
    # safe rebase onto an empty image keeps the guest-visible content
    rm -f r1.$F r0.$F e.$F
    qemu-img create -q -f $F r0.$F 4M
    qemu-io -c 'write -P 1 0 2M' r0.$F >/dev/null
    qemu-img create -q -f $F -b r0.$F -F $F r1.$F
    qemu-io -c 'write -P 2 1M 64k' r1.$F >/dev/null
    qemu-img convert -O raw r1.$F before.raw
    qemu-img create -q -f $F e.$F 4M
    if "$CIMG" rebase -p -b e.$F -F $F r1.$F 2>err.txt; then
        expect_rc 0 "$F: safe rebase keeps the content" qemu-img compare -F raw r1.$F before.raw
        qemu-img info --output=json r1.$F | jq -e '.["backing-filename"] == "e.'$F'"' >/dev/null &&
            pass "$F: safe rebase link" || fail "$F: safe rebase link"
        "$CIMG" rebase -b "" r1.$F && expect_rc 0 "$F: rebase -b '' (no backing) keeps the content" \
            qemu-img compare -F raw r1.$F before.raw
    else
        grep -q "does not support" err.txt && echo "  note: $F: no safe rebase" ||
            fail "$F: safe rebase: $(cat err.txt)"
    fi
    # rebase -u onto a copy of the old base keeps the content
    cp b0.$F other.$F
    qemu-io -c 'write -P 2 512k 1M' other.$F >/dev/null
    if "$CIMG" rebase -u -b other.$F -F $F top.$F 2>err.txt; then
        qemu-img info --output=json top.$F | jq -e '.["backing-filename"] == "other.'$F'"' >/dev/null &&
            pass "$F: rebase -u" || fail "$F: rebase -u did not change the link"
    else
        grep -q "does not support" err.txt && echo "  note: $F cannot change backing files" ||
            fail "$F: rebase -u: $(cat err.txt)"
    fi
done

finish
