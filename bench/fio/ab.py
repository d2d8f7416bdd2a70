#!/usr/bin/env python3
"""Interleaved A/B runs of fio engines on one file, with medians and CPU per I/O.

    bench/fio/ab.py [--rounds 8] [--secs 2] [--qd 32] [--file F] NAME='FIO ARGS' ...

Every NAME='FIO ARGS' is one variant (e.g. the coblk engine with some options,
or fio's own io_uring engine). Each round runs every variant once, in an order
that rotates and reverses from round to round, so drift of the disk or of the
machine's load hits all variants alike. Prints per variant: the median IOPS,
the median CPU time of the fio job per I/O (user + system, from fio's own
usr_cpu/sys_cpu), and, when a variant is named B, the median over rounds of
the IOPS ratio to B in the same round. The load average is printed too: on a
shared machine the ratios depend on it (see bench/README.md).

Workload: 4 KiB random reads, --direct=1, --norandommap, 0.25 s ramp.
Example:
    so=build/bench/fio/libcoblk-fio.so
    bench/fio/ab.py --file /work/img.raw \\
        coblk="--ioengine=external:$so --coblk_opts=driver=raw,cache.direct=on,file.aio=io_uring" \\
        B="--ioengine=io_uring"
"""
import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys


def run(args, opts):
    cmd = ['fio', '--name=job', '--rw=randread', '--bs=4k', '--time_based',
           f'--runtime={int(opts.secs * 1000)}ms', '--ramp_time=250ms', '--norandommap',
           '--randrepeat=0', '--output-format=json', f'--iodepth={opts.qd}',
           f'--filename={opts.file}', '--direct=1', f'--size={opts.size}'] + shlex.split(args)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    job = json.loads(out[out.index('{'):])['jobs'][0]  # fio may print notes first
    rd = job['read']
    ios = max(rd['total_ios'], 1)
    ns = job['job_runtime'] * 1e6
    return {'iops': rd['iops'], 'cpu_ns': (job['usr_cpu'] + job['sys_cpu']) / 100 * ns / ios,
            'usr_ns': job['usr_cpu'] / 100 * ns / ios}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--rounds', type=int, default=8)
    ap.add_argument('--secs', type=float, default=2)
    ap.add_argument('--qd', type=int, default=32)
    ap.add_argument('--file', default='raw.img', help='an existing file (O_DIRECT capable)')
    ap.add_argument('--size', default='128M')
    ap.add_argument('variants', nargs='+', metavar="NAME='FIO ARGS'")
    opts = ap.parse_args()
    variants = [v.split('=', 1) for v in opts.variants]
    if any(len(v) != 2 for v in variants):
        sys.exit("ab.py: variants are NAME='FIO ARGS'")
    res = {name: [] for name, _ in variants}
    loads = []
    for r in range(opts.rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        if r % 2:
            order.reverse()
        loads.append(os.getloadavg()[0])
        for name, args in order:
            res[name].append(run(args, opts))
        print(f'round {r}: ' + '  '.join(f'{n}={res[n][-1]["iops"]:.0f}' for n, _ in variants),
              flush=True)
    med = statistics.median
    print(f'load average (1 min) at the rounds: {min(loads):.1f} - {max(loads):.1f}')
    for name, _ in variants:
        rs = res[name]
        line = (f'{name:12s} IOPS median {med([x["iops"] for x in rs]):9.0f}   CPU/IO '
                f'{med([x["cpu_ns"] for x in rs]):6.0f} ns (user {med([x["usr_ns"] for x in rs]):5.0f})')
        if 'B' in res and name != 'B':
            ratios = [a['iops'] / b['iops'] for a, b in zip(rs, res['B']) if b['iops'] > 0]
            line += f'   ratio to B: median {med(ratios):.3f}'
        print(line)


if __name__ == '__main__':
    main()
