# Counts the writer's slow fdatasyncs (w.log) against index/notary syscall bursts (o.log); see slow-fsyncs.txt for the perf trace commands.
import re,collections
def parse(f):
    ev=[]
    for line in open(f):
        m=re.match(r'\s*([\d.]+) \(\s*([\d.]+) ms\): (?:(\S+?)/\d+ )?(\w+)\((.*)',line)
        if m: ev.append((float(m[1]),float(m[2]),m[3] or 'w',m[4],m[5]))
    return ev
w=parse('w.log'); o=parse('o.log')
print(len(w),'slow writer fsyncs;', collections.Counter((e[2][:15],e[3]) for e in o))
# index thread bursts: group o-events by thread into bursts separated by >50ms
def bursts(th):
    ts=sorted(e for e in o if e[2].startswith(th))
    out=[];cur=None
    for e in ts:
        if cur and e[0]-cur[1]<50: cur[1]=e[0]+e[1]; cur[2]+=1
        else:
            cur=[e[0],e[0]+e[1],1]; out.append(cur)
    return out
for th in ('tollbu-audit-i','tollbu-audit-n'):
    b=bursts(th); print(th,'bursts',len(b),[ (round(x[0]-w[0][0] if w else 0),round(x[1]-x[0]),x[2]) for x in b][:12])
inb=[(s-1,e+1) for s,e,n in bursts('tollbu-audit-i')]
nob=[(s-1,e+1) for s,e,n in bursts('tollbu-audit-n')]
c=collections.Counter()
for e in w:
    t0,t1=e[0],e[0]+e[1]
    a=any(s<t1 and t0<f for s,f in inb); b=any(s<t1 and t0<f for s,f in nob)
    c[('index' if a else '')+('+notary' if b else '')]+=1
print(c)
ib=bursts('tollbu-audit-i')
small=[(s-1,e+1) for s,e,n in ib if n<1000]; big=[(s-1,e+1) for s,e,n in ib if n>=1000]
c=collections.Counter()
for e in w:
    t0,t1=e[0],e[0]+e[1]
    k=('writeout ' if any(s<t1 and t0<f for s,f in small) else '')+('durable ' if any(s<t1 and t0<f for s,f in big) else '')+('notary' if any(s<t1 and t0<f for s,f in nob) else '')
    c[k or 'none']+=1
tot=(w[-1][0]-w[0][0])
print(c, 'window ms', round(tot), 'writeout ms', round(sum(f-s for s,f in small)), 'durable ms', round(sum(f-s for s,f in big)), 'notary ms', round(sum(f-s for s,f in nob)))
