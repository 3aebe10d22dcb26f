#!/usr/bin/env python3
"""Would O_DIRECT segment writes make a durable append cheaper? (docs/BENCHMARKS.md, audit log)

Appends of BATCH bytes into a 64 MiB file of zeros written beforehand (as the audit writer's spare
segments are), each made durable before the next, three ways:
  buffered      pwrite through the page cache, then fdatasync (what the writer does);
  direct        O_DIRECT pwrite of the 4 KiB blocks the batch touches (the last, partial block is
                written again with the next batch), then fdatasync;
  direct_dsync  the same with O_DSYNC instead of the fdatasync call.
Prints system and user CPU per append and per MB appended, and the append's p50/p99 wall time.
Usage: trial.py [DIR] (default: the current directory; the file is removed afterwards)."""
import mmap, os, resource, sys, time

DIR = sys.argv[1] if len(sys.argv) > 1 else "."
PATH = os.path.join(DIR, "direct-io-trial.bin")
SIZE = 64 << 20


def zeros():
    fd = os.open(PATH, os.O_CREAT | os.O_TRUNC | os.O_WRONLY)
    block = b"\0" * (1 << 20)
    for _ in range(SIZE >> 20):
        os.write(fd, block)
    os.fsync(fd)
    os.close(fd)


def run(mode, batch, appends):
    zeros()
    flags = os.O_WRONLY
    if mode != "buffered":
        flags |= os.O_DIRECT
    if mode == "direct_dsync":
        flags |= os.O_DSYNC
    fd = os.open(PATH, flags)
    aligned = mmap.mmap(-1, batch + 8192)  # page-aligned, as O_DIRECT needs
    data = b"x" * batch
    offset, lat = 0, []
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(appends):
        start = time.perf_counter()
        if mode == "buffered":
            os.pwrite(fd, data, offset)
            os.fdatasync(fd)
        else:
            first, end = offset & ~4095, (offset + batch + 4095) & ~4095
            os.pwrite(fd, memoryview(aligned)[: end - first], first)
            if mode == "direct":
                os.fdatasync(fd)
        offset += batch
        lat.append(time.perf_counter() - start)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    os.close(fd)
    lat.sort()
    sys_s, user_s = r1.ru_stime - r0.ru_stime, r1.ru_utime - r0.ru_utime
    mb = appends * batch / 1e6
    print(f"batch {batch:>7} B  {mode:13s} sys {sys_s / appends * 1e6:7.1f} us/append"
          f" ({sys_s / mb * 1e3:6.1f} ms/MB)  user {user_s / appends * 1e6:6.1f} us/append"
          f"  p50 {lat[len(lat) // 2] * 1e3:.3f} ms  p99 {lat[int(len(lat) * 0.99)] * 1e3:.3f} ms",
          flush=True)


for rnd in range(3):
    # a gateway's commit of a few records, and a batch of 1,000 records of ~550 bytes
    for batch, appends in ((2200, 3000), (550_000, 100)):
        for mode in ("buffered", "direct", "direct_dsync"):
            run(mode, batch, appends)
os.unlink(PATH)
