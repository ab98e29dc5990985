"""The Python peer for flock's benchmark: multiprocessing.Pool.map over the same x*x workload,
with the best chunksize among a few, pool start included (as a user pays it).

    python3 bench/python_pool.py [N] [WORKERS]
    python3 bench/python_pool.py --faults [N] [WORKERS] [TIMEOUT_S]

--faults: N inputs of ~50 us of pure-Python computation, once without faults and then with one
input (index 37) that segfaults (a real SIGSEGV: a read of address 0), run by Pool.map and by
concurrent.futures.ProcessPoolExecutor.map, each in a child process killed after TIMEOUT_S. What
each does is printed as measured; the last line, PYTHON_FAULTS=..., is for scripts/bench."""
import concurrent.futures as cf
import ctypes
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time


def square(x):
    return x * x


def run(n, workers, chunksize):
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(workers) as pool:
        out = pool.map(square, range(n), chunksize=chunksize)
    elapsed = time.perf_counter() - t0
    assert out[-1] == (n - 1) * (n - 1)
    return elapsed


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    best = min((run(n, workers, c), c) for c in (1_000, 10_000, 50_000, n // (4 * workers)))
    print(f"python multiprocessing.Pool.map {n} x x*x: {best[0] * 1e3:.1f} ms "
          f"({best[0] * 1e9 / n:.0f} ns/item, chunksize {best[1]})")
    tiny = []
    for _ in range(5):
        t0 = time.perf_counter()
        with mp.get_context("fork").Pool(workers) as pool:
            pool.map(square, [1, 2])
        tiny.append(time.perf_counter() - t0)
    tiny.sort()
    print(f"python Pool start + 2 tiny items + stop: {tiny[2] * 1e3:.1f} ms (median)")
    # Machine-readable, for scripts/bench to hand to flock_bench.
    print(f"PYTHON_NS_PER_ITEM={best[0] * 1e9 / n:.1f}")
    print(f"PYTHON_TINY_MS={tiny[2] * 1e3:.2f}")


MASK = (1 << 64) - 1
BAD = 37  # the input that segfaults, as in flock_bench's fault row (i % 100 == 37)


def spin(iterations, seed):
    x = seed | 1
    for _ in range(iterations):
        x = (x * 6364136223846793005 + 1442695040888963407) & MASK
    return x


def calibrate(target_s=50e-6):
    """Iterations of spin() that take about target_s on this CPU now."""
    n = 1000
    while True:
        t0 = time.perf_counter()
        spin(n, 1)
        s = time.perf_counter() - t0
        if s > 0.05:
            return max(1, round(n * target_s / s))
        n *= 2


ITERS = 1  # set in each process before its pool forks


def work(i):
    return spin(ITERS, i)


def work_or_segfault(i):
    if i == BAD:
        ctypes.string_at(0)  # reads address 0: SIGSEGV kills the worker
    return spin(ITERS, i)


def faults_child(kind, n, workers, iters):
    """Runs in its own process (and session): prints what the call returned, or nothing if it hangs."""
    global ITERS
    ITERS = iters
    chunksize = -(-n // (4 * workers))  # Pool.map's default
    ctx = mp.get_context("fork")
    t0 = time.perf_counter()
    if kind == "pool":
        with ctx.Pool(workers) as pool:
            out = pool.map(work_or_segfault, range(n))
        print(f"returned {len(out)} results after {time.perf_counter() - t0:.1f} s", flush=True)
        return
    got = 0
    try:
        with cf.ProcessPoolExecutor(workers, mp_context=ctx) as ex:
            for _ in ex.map(work_or_segfault, range(n), chunksize=chunksize):
                got += 1
        print(f"returned {got} results after {time.perf_counter() - t0:.1f} s", flush=True)
    except Exception as e:  # BrokenProcessPool, as measured
        print(f"raised {type(e).__name__} after {time.perf_counter() - t0:.1f} s; "
              f"{got} of {n} results delivered before it", flush=True)


def run_child(kind, n, workers, iters, timeout):
    """What the call in a child process did: its own last line, or that it hung past timeout."""
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--faults-child", kind, str(n), str(workers),
                          str(iters)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)  # the child and its pool's workers
        p.communicate()
        return f"hangs: no result after {timeout:.0f} s (then killed)"
    return out.strip().splitlines()[-1] if out.strip() else f"the child exited with status {p.returncode}, no result"


def faults_main(argv):
    global ITERS
    n = int(argv[0]) if len(argv) > 0 else 100_000
    workers = int(argv[1]) if len(argv) > 1 else 2
    timeout = float(argv[2]) if len(argv) > 2 else 30.0
    ITERS = calibrate()
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(workers) as pool:
        out = pool.map(work, range(n))
    clean = time.perf_counter() - t0
    assert len(out) == n and out[-1] == spin(ITERS, n - 1)
    print(f"python {n} x ~50 us ({ITERS} loop steps), {workers} workers, no faults: "
          f"Pool.map {clean * 1e3:.0f} ms ({n / clean:.0f} inputs/s)")
    pool_res = run_child("pool", n, workers, ITERS, timeout)
    print(f"python the same, input {BAD} segfaults: Pool.map {pool_res}")
    ex_res = run_child("executor", n, workers, ITERS, timeout)
    print(f"python the same, input {BAD} segfaults: ProcessPoolExecutor.map {ex_res}")
    print(f"PYTHON_FAULTS=Pool.map {pool_res} (without the fault: {clean:.1f} s); "
          f"ProcessPoolExecutor.map {ex_res}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--faults-child":
        faults_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--faults":
        faults_main(sys.argv[2:])
    else:
        main()
