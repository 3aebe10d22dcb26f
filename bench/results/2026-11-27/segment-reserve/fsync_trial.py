# fdatasync latency of small appends to a segment-like file, four ways (see fsync-trial.txt).
import os, time, statistics, sys
N=3000; REC=b'x'*6000  # ~10 records of 600 B per batch
def run(mode):
    p=f'seg-{mode}'
    if os.path.exists(p): os.unlink(p)
    fd=os.open(p, os.O_RDWR|os.O_CREAT, 0o644)
    if mode=='keepsize':
        import ctypes, ctypes.util
        libc=ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)
        FALLOC_FL_KEEP_SIZE=1
        r=libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, ctypes.c_long(0), ctypes.c_long(64<<20))
        assert r==0
        os.fsync(fd)
    elif mode=='zeroed':
        os.write(fd, b'\0'*(64<<20)); os.fsync(fd); os.lseek(fd,0,0)
    elif mode=='fallocated':
        os.posix_fallocate(fd, 0, 64<<20); os.fsync(fd)
    lat=[]
    for i in range(N):
        os.write(fd, REC)
        t=time.perf_counter(); os.fdatasync(fd); lat.append((time.perf_counter()-t)*1e3)
    os.close(fd); os.unlink(p)
    lat.sort()
    return f"{mode:10s} p50 {lat[N//2]:.3f} p90 {lat[int(N*.9)]:.3f} p99 {lat[int(N*.99)]:.3f} p99.9 {lat[int(N*.999)]:.3f} ms"
for rnd in range(int(sys.argv[1]) if len(sys.argv)>1 else 2):
    for m in ['growing','keepsize','fallocated','zeroed']:
        print(rnd, run(m), flush=True)
