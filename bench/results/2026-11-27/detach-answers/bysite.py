import sys, collections, re
skip = re.compile(r'^(alloc|alloc_impl|alloc_impl_runtime|allocate|finish_grow<>|grow_amortized<>|grow_one<>|reserve<>|reserve|do_reserve_and_handle<>|try_allocate_in<>|with_capacity_in<>|with_capacity<>|exchange_malloc|__rust_alloc|__rdl_alloc|malloc|new_uninit_in<>|try_new_uninit_in<>|allocate_in<>|new<>|__rust_realloc|realloc|__rdl_realloc|grow<>|grow_impl<>|shrink<>|new_in<>|from_size_align_unchecked|box_new|box_new_uninit)( \(.*\))?$')
sums = collections.Counter()
total = 0
for line in open(sys.argv[1]):
    stack, n = line.rsplit(' ', 1)
    n = int(n); total += n
    frames = [f for f in stack.split(';') if f]
    frames = [f for f in frames if not skip.match(f)]
    key = ' → '.join(frames[-int(sys.argv[2]) if len(sys.argv)>2 else -5:])
    sums[key] += n
print(f"# total peak {total/2**20:.2f} MiB")
for k, n in sums.most_common(40):
    print(f"{n/2**20:7.2f} {k}")
