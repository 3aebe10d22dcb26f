#!/usr/bin/env python3
"""Would fsyncing a checkpoint's tile files together cost less CPU than one after another?

The notary writes each C2SP tile as a new file (temporary name, write, fsync, rename) and then syncs
the directory. Here 128 files of 8 KiB (one tile each) are written that way ("seq"), and again with
every file written first, then all fsynced from 8 threads at once, so that the block layer can merge
their cache flushes, then renamed ("par"). Prints wall time and CPU (user + system) per file.
Usage: trial.py [DIR] (default: the current directory; everything it makes is removed)."""
import os, resource, shutil, sys, time
from concurrent.futures import ThreadPoolExecutor

DIR = sys.argv[1] if len(sys.argv) > 1 else "."
FILES = 128
DATA = os.urandom(8192)


def one_by_one(d):
    for i in range(FILES):
        tmp = f"{d}/{i}.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
        os.write(fd, DATA)
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, f"{d}/{i}")


def together(d, pool):
    open_files = []
    for i in range(FILES):
        tmp = f"{d}/{i}.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
        os.write(fd, DATA)
        open_files.append((fd, tmp, i))
    list(pool.map(lambda f: os.fsync(f[0]), open_files))
    for fd, tmp, i in open_files:
        os.close(fd)
        os.rename(tmp, f"{d}/{i}")


pool = ThreadPoolExecutor(8)
for rnd in range(3):
    for name in ("seq", "par"):
        d = os.path.join(DIR, f"tile-fsync-{name}-{rnd}")
        os.makedirs(d)
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        one_by_one(d) if name == "seq" else together(d, pool)
        fd = os.open(d, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        cpu = (r1.ru_stime - r0.ru_stime) + (r1.ru_utime - r0.ru_utime)
        print(f"{name}: {FILES} files, wall {(t1 - t0) * 1e3:.1f} ms, CPU {cpu * 1e6 / FILES:.0f} us per file",
              flush=True)
        shutil.rmtree(d)
