# 150 writes of 700 KB (≈ 1,000 audit records), each followed by fdatasync, into a growing file, a file whose
# blocks are set aside with fallocate(FALLOC_FL_KEEP_SIZE) (what the writer appends to when no spare is ready)
# and a file of zeros written and synced before (a spare). Run from a directory on the disk under test.
import os, time, ctypes
libc = ctypes.CDLL("libc.so.6", use_errno=True)
N=150; SZ=700*1024
def run(mode):
    path='write-trial.tmp'
    fd = os.open(path, os.O_RDWR|os.O_CREAT|os.O_TRUNC, 0o600)
    if mode=='zeros':
        z = bytes(1024*1024)
        for i in range(N+4): os.write(fd, z)
        os.fdatasync(fd); os.lseek(fd,0,0)
    elif mode=='keep':
        r = libc.fallocate(fd, 1, ctypes.c_long(0), ctypes.c_long(64*1024*1024)); assert r==0
    buf = os.urandom(SZ)
    wt=0; st=0; c0=os.times()
    for i in range(N):
        t=time.perf_counter(); os.write(fd, buf); wt+=time.perf_counter()-t
        t=time.perf_counter(); os.fdatasync(fd); st+=time.perf_counter()-t
    c1=os.times()
    os.close(fd); os.unlink(path)
    print(f"{mode:6}: write {wt/N*1e6:4.0f} us, fdatasync {st/N*1e6:4.0f} us, cpu {(c1.user+c1.system-c0.user-c0.system)/N*1e6:4.0f} us per 700 KB")
for r in range(3):
    for m in ('grow','keep','zeros'): run(m)
