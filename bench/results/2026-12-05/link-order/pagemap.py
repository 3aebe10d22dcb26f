# Resident pages of the tollbu binary's .text in a running process, and the functions in them.
import sys, struct, subprocess, collections
pid, binary = int(sys.argv[1]), sys.argv[2]
# section table
secs = {}
for line in subprocess.run(['readelf', '-SW', binary], capture_output=True, text=True).stdout.splitlines():
    parts = line.replace('[ ', '[').split()
    if len(parts) > 5 and parts[0].startswith('[') and parts[1].startswith('.'):
        secs[parts[1]] = (int(parts[3], 16), int(parts[4], 16), int(parts[5], 16))  # addr, off, size
text_addr, text_off, text_size = secs['.text']
maps = []
for line in open(f'/proc/{pid}/maps'):
    p = line.split()
    if len(p) >= 6 and p[5] == binary or (len(p) >= 6 and p[5].endswith(binary.split('/')[-1])):
        lo, hi = (int(x, 16) for x in p[0].split('-'))
        maps.append((lo, hi, int(p[2], 16), p[1]))
pm = open(f'/proc/{pid}/pagemap', 'rb')
def resident(va):
    pm.seek(va // 4096 * 8); (e,) = struct.unpack('<Q', pm.read(8)); return bool(e >> 63)
# file offset -> va
res_offsets = set()
for lo, hi, off, perm in maps:
    for va in range(lo, hi, 4096):
        if resident(va):
            res_offsets.add(off + (va - lo))
def sec_of(o):
    for n, (a, so, sz) in secs.items():
        if so <= o < so + sz and n not in ('.tbss',):
            return n
    return '?'
by = collections.Counter(sec_of(o) for o in res_offsets)
for n, c in by.most_common(): print(f'{n:20s} {c*4:8d} KiB')
text_pages = sorted((o - text_off) // 4096 for o in res_offsets if text_off <= o < text_off + text_size)
# runs
runs = []; 
for p in text_pages:
    if runs and p == runs[-1][1] + 1: runs[-1][1] = p
    else: runs.append([p, p])
print('text runs (KiB offset in .text, pages):')
syms = []
for line in subprocess.run(['nm', '-S', '--defined-only', binary], capture_output=True, text=True).stdout.splitlines():
    p = line.split()
    if len(p) == 4 and p[2] in 'tTwW':
        syms.append((int(p[0], 16), int(p[1], 16), p[3]))
syms.sort()
import bisect
addrs = [s[0] for s in syms]
for a, b in runs:
    print(f'  {a*4:6d}-{(b+1)*4:6d} KiB  {b-a+1} pages')
    if len(sys.argv) > 3 and a * 4 > int(sys.argv[3]):
        lo = text_addr + a * 4096; hi = text_addr + (b + 1) * 4096
        i = bisect.bisect_left(addrs, lo)
        names = [s[2] for s in syms[i:bisect.bisect_left(addrs, hi)]]
        for n in names[:6]: print('      ', n[:140])
        if len(names) > 6: print('       ...', len(names), 'functions')
