"""Workflow parse + dry-run time of this working tree against a baseline commit, side by side.

What is timed: one `snakemake -n --forceall --quiet rules --configfile CONFIG` in a fresh
process, wall clock, from start to exit: Python and Snakemake start-up, the Snakefile's parse
(the config check, dpolab's imports, the rule files) and the DAG of every job, nothing run.
Two configs:
  smoke:   configs/smoke.yaml (the test study; goal: under 3 s);
  grid1000: configs/smoke.yaml with 10 registry-loss variants x 10 betas x 10 seeds, 1,000 dpo
           jobs (goal: under 20 s), written by this script to a temporary file.

Baseline: commit fc2893b, the last one before the config became a checked, frozen Study
(dpolab.study, dpolab.checks), checked out with `git worktree add --detach` into a temporary
folder and removed at the end. Both trees run the same snakemake executable, each with its
own tree as working directory; the installed dpolab is an editable install of this tree's
src/, so the baseline runs with PYTHONPATH=<worktree>/src and a sitecustomize that drops this
tree's src/ from sys.path (dpolab is a namespace package: otherwise modules missing from the
baseline would still be found here); checked: the baseline's dpolab is its own, no dpolab.study.
Before timing, each config must dry-run with exit status 0 on both trees, with 1,000 dpo jobs
for grid1000. Runs alternate baseline and current so both share the machine's noise; the
table has the medians of wall time (the goals) and of CPU time (user + system of the child,
less moved by other load), and current/baseline.
A dry run writes nothing under results/ (checked after the runs).

    OMP_NUM_THREADS=1 python benchmarks/config_dry_run.py [--repeats 3] [--json out.json]
    python benchmarks/config_dry_run.py --profile-parse     # where this tree's parse time goes
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pstats
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = ROOT / ".venv" / "bin" / "snakemake"
BASELINE = "fc2893b"
GOALS = {"smoke": 3.0, "grid1000": 20.0}  # seconds, this tree's median

# 10 registry-loss variants every version since the loss registry accepts (no per-variant betas)
GRID_VARIANTS = {
    "dpo": {"loss": "dpo"},
    "ipo": {"loss": "ipo"},
    "cdpo": {"loss": "cdpo", "label_smoothing": 0.1},
    "cdpo_e2": {"loss": "cdpo", "label_smoothing": 0.2},
    "hinge": {"loss": "hinge"},
    "robust": {"loss": "robust", "label_smoothing": 0.1},
    "rdpo": {"loss": "rdpo", "alpha": 0.1},
    "simpo": {"loss": "simpo", "gamma": 0.05},
    "simpo_g1": {"loss": "simpo", "gamma": 1.0},
    "dpo_norm": {"loss": "dpo_norm"},
}
GRID_BETAS = [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5]
GRID_SEEDS = list(range(10))


def grid1000_config(path: Path) -> Path:
    """configs/smoke.yaml with the 10 x 10 x 10 grid (its kto/orpo entries stay defined, unused)."""
    config = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    config["study"] = "grid1000"
    config["variants"] = {**config["variants"], **GRID_VARIANTS}
    config["grid"] = {"variants": list(GRID_VARIANTS), "betas": GRID_BETAS, "seeds": GRID_SEEDS}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def environment(tree: Path, baseline: bool) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    if baseline:
        # dpolab has no __init__.py: a namespace package, whose modules Python looks up in every
        # dpolab/ folder on sys.path. PYTHONPATH alone would put the baseline's first and still
        # find this tree's dpolab.study behind it; the sitecustomize drops this tree's src/.
        env["PYTHONPATH"] = os.pathsep.join([str(tree / "src"), str(tree.parent / "site")])
    return env


def isolate_baseline(tree: Path) -> None:
    site = tree.parent / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        f"import sys\nsys.path[:] = [p for p in sys.path if p.rstrip('/') != {str(ROOT / 'src')!r}]\n"
    )


def dry_run(tree: Path, config: Path, baseline: bool) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall seconds, CPU seconds (the child's user + system: less moved by other load) and the result."""
    command = [str(SNAKEMAKE), "-n", "--forceall", "--quiet", "rules", "--configfile", str(config)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    done = subprocess.run(command, cwd=tree, env=environment(tree, baseline), capture_output=True, text=True)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done


def job_count(output: str, rule: str) -> int | None:
    match = re.search(rf"^{re.escape(rule)}\s+(\d+)\s*$", output, re.MULTILINE)
    return int(match.group(1)) if match else None


def check_imports(tree: Path, baseline: bool) -> str:
    """Where dpolab comes from under the tree's environment; the baseline must not find dpolab.study."""
    probe = (
        "import importlib.util, dpolab, dpolab.config; print(*dpolab.__path__, sep=','); "
        "print(dpolab.config.__file__); print(importlib.util.find_spec('dpolab.study') is not None)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tree,
        env=environment(tree, baseline),
        capture_output=True,
        text=True,
        check=True,
    )
    folders, config_file, has_study = done.stdout.split()
    own = (tree / "src" / "dpolab").resolve()
    if [Path(f).resolve() for f in folders.split(",")] != [own] or Path(config_file).resolve().parent != own:
        raise SystemExit(f"{tree}: dpolab from {folders} (dpolab.config: {config_file}), not only from {own}")
    if has_study != ("False" if baseline else "True"):
        raise SystemExit(f"{tree}: dpolab.study {'found' if has_study == 'True' else 'missing'} ({folders})")
    return f"{folders} (dpolab.study {'importable' if has_study == 'True' else 'absent'})"


@contextlib.contextmanager
def baseline_worktree(commit: str):
    with tempfile.TemporaryDirectory(prefix="dpolab-baseline-") as tmp:
        tree = Path(tmp) / "tree"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run([*git, "add", "--quiet", "--detach", str(tree), commit], check=True)
        try:
            isolate_baseline(tree)
            yield tree
        finally:
            subprocess.run([*git, "remove", "--force", str(tree)], check=False)
            subprocess.run([*git, "prune"], check=False)


def results_listing(tree: Path) -> set[str]:
    results = tree / "results"
    return {str(p.relative_to(results)) for p in results.rglob("*")} if results.is_dir() else set()


def benchmark(args) -> dict:
    with tempfile.TemporaryDirectory(prefix="dpolab-dry-run-") as tmp, baseline_worktree(args.baseline) as base_tree:
        trees = {"baseline": (base_tree, True), "current": (ROOT, False)}
        configs = {"smoke": ROOT / "configs" / "smoke.yaml", "grid1000": grid1000_config(Path(tmp) / "grid1000.yaml")}
        before = {name: results_listing(tree) for name, (tree, _) in trees.items()}
        for name, (tree, baseline) in trees.items():
            print(f"{name:8s} {tree}  dpolab from {check_imports(tree, baseline)}")
        # Checked once first (also a warm-up of the file cache): exit status 0, the grid's dpo jobs.
        for study, config in configs.items():
            for name, (tree, baseline) in trees.items():
                seconds, _cpu, done = dry_run(tree, config, baseline)
                if done.returncode != 0:
                    raise SystemExit(f"{name} {study}: snakemake exited {done.returncode}\n{done.stderr[-3000:]}")
                jobs = job_count(done.stdout, "dpo")
                total = job_count(done.stdout, "total")
                print(f"checked  {name:8s} {study:8s} rc 0, {jobs} dpo jobs, {total} jobs, {seconds:.2f} s (warm-up)")
                if study == "grid1000" and jobs != len(GRID_VARIANTS) * len(GRID_BETAS) * len(GRID_SEEDS):
                    raise SystemExit(f"{name} grid1000: {jobs} dpo jobs, expected 1000")
        times = {(study, name): [] for study in configs for name in trees}
        cpu = {(study, name): [] for study in configs for name in trees}
        for study, config in configs.items():
            for repeat in range(args.repeats):
                order = list(trees) if repeat % 2 == 0 else list(trees)[::-1]
                for name in order:
                    tree, baseline = trees[name]
                    seconds, cpu_s, done = dry_run(tree, config, baseline)
                    if done.returncode != 0:
                        raise SystemExit(f"{name} {study}: snakemake exited {done.returncode}\n{done.stderr[-3000:]}")
                    times[(study, name)].append(seconds)
                    cpu[(study, name)].append(cpu_s)
                    print(
                        f"run {repeat + 1}/{args.repeats} {study:8s} {name:8s} {seconds:6.2f} s wall "
                        f"{cpu_s:6.2f} CPU-s",
                        flush=True,
                    )
        for name, (tree, _) in trees.items():
            added = results_listing(tree) - before[name]
            if added:
                raise SystemExit(f"{name}: the dry runs wrote under results/: {sorted(added)[:5]}")
    rows = {}
    for study in configs:
        base, cur = (statistics.median(times[(study, n)]) for n in ("baseline", "current"))
        base_cpu, cur_cpu = (statistics.median(cpu[(study, n)]) for n in ("baseline", "current"))
        rows[study] = {
            "baseline_s": base,
            "current_s": cur,
            "ratio": cur / base,
            "baseline_cpu_s": base_cpu,
            "current_cpu_s": cur_cpu,
            "cpu_ratio": cur_cpu / base_cpu,
            "goal_s": GOALS[study],
            "goal_met": cur < GOALS[study],
            "baseline_runs": times[(study, "baseline")],
            "current_runs": times[(study, "current")],
            "baseline_cpu_runs": cpu[(study, "baseline")],
            "current_cpu_runs": cpu[(study, "current")],
        }
    return rows


def print_table(rows: dict, args) -> None:
    head = commit_of(ROOT)
    print(
        f"\nbaseline {args.baseline}, current {head} + working tree; median wall of {args.repeats} dry runs each, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    print(
        f"{'config':10s} {'baseline s':>10s} {'current s':>10s} {'cur/base':>9s}   {'base CPU-s':>10s} "
        f"{'cur CPU-s':>10s} {'cur/base':>9s}   {'goal':>8s}  met"
    )
    for study, row in rows.items():
        print(
            f"{study:10s} {row['baseline_s']:10.2f} {row['current_s']:10.2f} {row['ratio']:8.2f}x   "
            f"{row['baseline_cpu_s']:10.2f} {row['current_cpu_s']:10.2f} {row['cpu_ratio']:8.2f}x   "
            f"{'< ' + format(row['goal_s'], 'g') + ' s':>8s}  {'yes' if row['goal_met'] else 'NO'}"
        )
    print("goal: the current tree's median wall time; CPU-s: the child's user + system time, less moved by other load")


def commit_of(tree: Path) -> str:
    done = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "-C", str(tree), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
    ).stdout.strip()
    return done.stdout.strip() + (" (modified)" if dirty else "")


# ---- --profile-parse: where this tree's parse time goes ----------------------------------------------
def profile_parse(top: int) -> None:
    with tempfile.TemporaryDirectory(prefix="dpolab-profile-") as tmp:
        config = grid1000_config(Path(tmp) / "grid1000.yaml")
        env = environment(ROOT, baseline=False)
        # 1. imports: python -X importtime of what the Snakefile imports, top self+children times
        probe = "import dpolab.config, dpolab.checks, dpolab.resources, dpolab.study"
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", probe],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        imports = []
        for line in done.stderr.splitlines():
            match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
            if match:
                imports.append((int(match.group(2)), int(match.group(1)), len(match.group(3)), match.group(4)))
        total = max(c for c, _, _, _ in imports) if imports else 0
        print(f"imports of the Snakefile's dpolab modules: {total / 1e6:.2f} s in all; top {top} by cumulative time")
        for cumulative, own, depth, name in sorted(imports, reverse=True)[:top]:
            print(f"  {cumulative / 1e6:6.3f} s cumulative {own / 1e6:6.3f} s self  {'  ' * (depth // 2)}{name}")
        # 2. read_study on the 1000-point config in this process, without a profiler
        sys.path.insert(0, str(ROOT / "src"))
        from dpolab import config as study_config
        from dpolab.data import count_imdb_reviews

        study_config.read_study(config, check_environment=False)  # imports done, file cache warm
        print()
        for label, call in (
            ("read_study(grid1000), machine checks included", lambda: study_config.read_study(config)),
            ("  of which one _schema() (YAML read of the schema)", study_config._schema),
            ("  of which count_imdb_reviews() (data check)", count_imdb_reviews),
        ):
            began = time.perf_counter()
            for _ in range(5):
                call()
            print(f"{label:52s} {(time.perf_counter() - began) / 5 * 1000:7.1f} ms")
        # 3. the whole dry run under cProfile, in a child: Snakefile parse + DAG
        prof = Path(tmp) / "dry_run.prof"
        command = [
            sys.executable,
            "-m",
            "cProfile",
            "-o",
            str(prof),
            str(SNAKEMAKE),
            "-n",
            "--forceall",
            "--quiet",
            "rules",
            "--configfile",
            str(config),
        ]
        subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
        stats = pstats.Stats(str(prof), stream=io.StringIO())
        rows = [
            (cumulative, own, calls, file, f"{short_path(file)}:{line}({func})")
            for (file, line, func), (_cc, calls, own, cumulative, _callers) in stats.stats.items()
        ]
        snakefile = max((r[0] for r in rows if r[3].endswith("/Snakefile")), default=0.0)
        print(
            f"\ngrid1000 dry run under cProfile: {stats.total_tt:.2f} s, of which the Snakefile's parse "
            f"{snakefile:.2f} s (the rest: Snakemake's DAG of the jobs)"
        )
        ours = [r for r in rows if "/src/dpolab/" in r[3] or r[3].endswith((".smk", "/Snakefile"))]
        print(f"top {top} of dpolab and the rule files by cumulative time (cumulative s, self s, calls):")
        for cumulative, own, calls, _file, where in sorted(ours, reverse=True)[:top]:
            print(f"  {cumulative:7.2f} {own:7.2f} {calls:9d}  {where}")
        print(f"top {top} of everything by self time:")
        for cumulative, own, calls, _file, where in sorted(rows, key=lambda r: r[1], reverse=True)[:top]:
            print(f"  {cumulative:7.2f} {own:7.2f} {calls:9d}  {where}")


def short_path(file: str) -> str:
    for marker in ("/site-packages/", "/src/", "/work/main/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="timed dry runs per tree and config (default 3)")
    parser.add_argument("--baseline", default=BASELINE, help=f"baseline commit (default {BASELINE})")
    parser.add_argument("--json", type=Path, help="also write the medians, ratios and every run's time here")
    parser.add_argument(
        "--profile-parse",
        action="store_true",
        help="only profile this tree's parse of the 1000-point config (imports, load_study, cProfile)",
    )
    parser.add_argument("--top", type=int, default=12, help="rows per --profile-parse listing")
    args = parser.parse_args()
    if not SNAKEMAKE.is_file():
        raise SystemExit(f"{SNAKEMAKE}: not found (make the project's venv first)")
    if args.profile_parse:
        profile_parse(args.top)
        return
    rows = benchmark(args)
    print_table(rows, args)
    if args.json:
        args.json.write_text(
            json.dumps(
                {"baseline": args.baseline, "current": commit_of(ROOT), "repeats": args.repeats, "configs": rows},
                indent=2,
            )
            + "\n"
        )
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
