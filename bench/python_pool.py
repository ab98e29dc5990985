"""The Python peer for flock's benchmark: multiprocessing.Pool.map over the same x*x workload,
with the best chunksize among a few, pool start included (as a user pays it)."""
import multiprocessing as mp
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


if __name__ == "__main__":
    main()
