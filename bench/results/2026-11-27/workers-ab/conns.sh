REL=/work/main/target/release
ulimit -n "$(ulimit -Hn)"
$REL/examples/bench_upstream 127.0.0.1:18001 >/dev/null 2>&1 & U=$!
$1 127.0.0.1:18004 http://127.0.0.1:18001 >/dev/null 2>&1 & A=$!
sleep 1
PERSON=$($REL/examples/bench_upstream 127.0.0.1:0 --print-body)
PID0=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$PERSON")
wrk -t2 -c1000 -d6s http://127.0.0.1:18004/population/persons/$PID0 >/dev/null & W=$!
for s in 2 4; do sleep 2; echo "t=$s proxy->upstream conns: $(ss -tnpH state established '( dport = :18001 )' | grep -c "pid=$A,")"; done
wait $W
grep VmHWM /proc/$A/status
kill $U $A
