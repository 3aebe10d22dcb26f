#!/usr/bin/env python3
"""Which way of making a batch of new tile files durable costs the least CPU?

The notary writes each C2SP tile as a new file (temporary name, write, fsync, rename) and syncs the
directories afterwards ("seq", what it does). Alternatives, for the same 128 files of 8 KiB:
"srf": write every file, start each one's writeback (sync_file_range WRITE), then fsync each (the
first journal commit can carry the others' block allocations), rename;
"fadv": the same with posix_fadvise(DONTNEED), which also starts writeback (rustix has it; it has
no sync_file_range, and the crates forbid unsafe code);
"syncfs": write every file, one syncfs(2) for the whole filesystem, rename.
CPU is this process's (user + system) plus the filesystem's jbd2 journal thread's, per file.
Usage: trial.py [DIR] (default: the current directory; everything it makes is removed)."""
import ctypes, glob, os, resource, shutil, sys, time

DIR = sys.argv[1] if len(sys.argv) > 1 else "."
FILES = 128
DATA = os.urandom(8192)
libc = ctypes.CDLL(None, use_errno=True)
SYNC_FILE_RANGE_WRITE = 2
TCK = os.sysconf("SC_CLK_TCK")


def jbd2_ticks():
    dev = os.stat(DIR).st_dev
    name = f"{os.major(dev)}:{os.minor(dev)}"
    total = 0
    for p in glob.glob("/proc/[0-9]*/comm"):
        try:
            if open(p).read().startswith("jbd2/"):
                st = open(p[:-4] + "stat").read().rsplit(")", 1)[1].split()
                total += int(st[11]) + int(st[12])
        except OSError:
            pass
    return total


def create_all(d):
    fds = []
    for i in range(FILES):
        tmp = f"{d}/{i}.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
        os.write(fd, DATA)
        fds.append((fd, tmp, i))
    return fds


def rename_all(d, fds):
    for fd, tmp, i in fds:
        os.close(fd)
        os.rename(tmp, f"{d}/{i}")


def seq(d):
    for i in range(FILES):
        tmp = f"{d}/{i}.tmp"
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
        os.write(fd, DATA)
        os.fsync(fd)
        os.close(fd)
        os.rename(tmp, f"{d}/{i}")


def srf(d):
    fds = create_all(d)
    for fd, _, _ in fds:
        libc.sync_file_range(fd, ctypes.c_int64(0), ctypes.c_int64(0), SYNC_FILE_RANGE_WRITE)
    for fd, _, _ in fds:
        os.fsync(fd)
    rename_all(d, fds)


def fadv(d):
    fds = create_all(d)
    for fd, _, _ in fds:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    for fd, _, _ in fds:
        os.fsync(fd)
    rename_all(d, fds)


def syncfs(d):
    fds = create_all(d)
    libc.syncfs(fds[0][0])
    rename_all(d, fds)


for rnd in range(5):
    for name, fn in (("seq", seq), ("srf", srf), ("fadv", fadv), ("syncfs", syncfs)):
        d = os.path.join(DIR, f"tile-sync-{name}-{rnd}")
        os.makedirs(d)
        j0, r0, t0 = jbd2_ticks(), resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        fn(d)
        fd = os.open(d, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        t1, r1, j1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF), jbd2_ticks()
        cpu = (r1.ru_stime - r0.ru_stime) + (r1.ru_utime - r0.ru_utime)
        jcpu = (j1 - j0) / TCK
        print(f"{name:6}: {FILES} files, wall {(t1 - t0) * 1e3:5.1f} ms, CPU {cpu * 1e6 / FILES:4.0f} us per file"
              f" + jbd2 {jcpu * 1e6 / FILES:4.0f}", flush=True)
        shutil.rmtree(d)
