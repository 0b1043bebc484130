"""Benchmark: `curate filter` against a plain stdlib-json loop with the same rules.

Generates (once, cached) seeded Danbooru2018-shaped metadata of at least 1 GB, then in the same run
times, alternately, the baseline (stdlib json, one line at a time, one process: what existing tools
such as danbooru-utility do) and curate's filter, each in a fresh subprocess so peak memory is its
own. Checks that both keep the same ids, and prints MB/s, posts/s, peak memory and the ratio.

    python bench/filter.py                   # 1 GiB, both rule sets, 3 rounds
    python bench/filter.py --size-mb 200 --rounds 1 --rules default

Timings on a shared VM are noisy: the median of the rounds is reported, and the spread with it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curate.testing.process import in_fresh_process  # noqa: E402

from curate.filter.runner import FilterRules, run_filter  # noqa: E402
from curate.testing.metadata import metadata_lines, naive_filter_ids  # noqa: E402

RULESETS = {
    # the CLI's defaults: size floor, ratings g/s, still images, default exclusions
    "default": FilterRules(),
    # the seed recipe (pipelines/danbooru2018-portraits): favorites floor and a six-year window too
    "recipe": FilterRules(min_favs=10, max_age_years=6),
}


def _gen_part(args: tuple[Path, int, int, int]) -> None:
    path, n, seed, first_id = args
    with open(path, "w") as f:
        for line in metadata_lines(n, seed=seed, first_id=first_id):
            f.write(line + "\n")


def make_data(path: Path, size_mb: int, seed: int) -> Path:
    """Seeded Danbooru2018-shaped JSON lines of at least size_mb MB, generated in parallel, cached."""
    if path.exists():
        return path
    per_line = 2300  # bytes, measured on the generator's output
    parts = os.cpu_count() or 2
    n = size_mb * 1_000_000 // per_line + 1
    chunk = n // parts + 1
    tmp = [path.with_name(f".{path.name}.part{i}") for i in range(parts)]
    print(f"generating {n:,} posts (~{size_mb} MB) into {path} ...", flush=True)
    with multiprocessing.Pool(parts) as pool:
        pool.map(_gen_part, [(tmp[i], chunk, seed * 1000 + i, 1000 + i * chunk) for i in range(parts)])
    with open(path.with_name(path.name + ".tmp"), "wb") as out:
        for t in tmp:
            with open(t, "rb") as part:
                shutil.copyfileobj(part, out, 16 << 20)
            t.unlink()
    os.replace(path.with_name(path.name + ".tmp"), path)
    return path


class TreeMemory:
    """Peak resident memory of this process and its children, sampled from /proc every 20 ms.

    (ru_maxrss will not do: Linux carries a process's high-water mark across exec, so a spawned
    child would report its parent's peak.)
    """

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _rss(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (FileNotFoundError, ProcessLookupError, IndexError):
            return 0

    def _tree(self, pid: int) -> list[int]:
        out = [pid]
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    for child in f.read().split():
                        out += self._tree(int(child))
        except (FileNotFoundError, ProcessLookupError):
            pass
        return out

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, sum(self._rss(p) for p in self._tree(os.getpid())))

    def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        self._stop.set()
        self._thread.join()
        return self.peak / 1e6


def _run_baseline(path: str, rules: FilterRules, q) -> None:
    mem = TreeMemory()
    t = time.perf_counter()
    with open(path, "rb") as f:
        ids = naive_filter_ids(f, rules)
    q.put(("baseline", time.perf_counter() - t, ids, mem.stop()))


def _run_curate(path: str, rules: FilterRules, workers: int, q) -> None:
    import pyarrow.parquet as pq

    out = Path(path).with_name("bench-filtered.parquet")
    # every round filters from scratch: an output already there would make the run a no-op check
    for old in (out, out.with_name("bench-filtered.stats.json")):
        old.unlink(missing_ok=True)
    mem = TreeMemory()
    t = time.perf_counter()
    stats = run_filter([path], out, rules, workers=workers, progress=False)
    dt = time.perf_counter() - t
    peak = mem.stop()
    ids = pq.read_table(out, columns=["id"]).column("id").to_pylist()
    q.put(("curate", dt, ids, peak, stats["posts"]))




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=1100, help="metadata size (>= 1000 for the target)")
    ap.add_argument("--seed", type=int, default=2018)
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the median is reported")
    ap.add_argument("--workers", type=int, default=None, help="curate's processes (default: one per core)")
    ap.add_argument("--rules", choices=[*RULESETS, "both"], default="both")
    ap.add_argument("--data-dir", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "curate-bench")
    args = ap.parse_args()

    args.data_dir.mkdir(parents=True, exist_ok=True)
    data = make_data(args.data_dir / f"danbooru2018-{args.size_mb}mb-seed{args.seed}.json", args.size_mb, args.seed)
    size = data.stat().st_size
    workers = args.workers or len(os.sched_getaffinity(0))
    print(f"data: {size / 1e6:,.0f} MB, {os.cpu_count()} cores, curate workers={workers}, rounds={args.rounds}")

    names = list(RULESETS) if args.rules == "both" else [args.rules]
    for name in names:
        rules = RULESETS[name]
        base_t, cur_t = [], []
        for r in range(args.rounds):
            _, bt, base_ids, base_mem = in_fresh_process(_run_baseline, str(data), rules)
            _, ct, cur_ids, cur_mem, posts = in_fresh_process(_run_curate, str(data), rules, workers)
            if cur_ids != base_ids:
                sys.exit(f"MISMATCH in rules={name}: curate kept {len(cur_ids):,} ids, baseline {len(base_ids):,}")
            base_t.append(bt)
            cur_t.append(ct)
            print(f"  [{name}] round {r + 1}: baseline {bt:6.1f}s  curate {ct:6.1f}s", flush=True)
        b, c = statistics.median(base_t), statistics.median(cur_t)
        print(f"\nrules={name}: {posts:,} posts, both kept the same {len(cur_ids):,} ids")
        print(f"  baseline (stdlib json, 1 process): {size / 1e6 / b:7.1f} MB/s  {posts / b:9,.0f} posts/s  "
              f"peak {base_mem:,.0f} MB   (runs {', '.join(f'{t:.1f}' for t in base_t)} s)")
        print(f"  curate filter ({workers} workers):        {size / 1e6 / c:7.1f} MB/s  {posts / c:9,.0f} posts/s  "
              f"peak {cur_mem:,.0f} MB, all processes   (runs {', '.join(f'{t:.1f}' for t in cur_t)} s)")
        print(f"  ratio: {b / c:.2f}x the baseline   target: >= 250 MB/s and >= 5x")


if __name__ == "__main__":
    main()
