"""Snakemake dry runs inside a Python process, through its command-line entry point
(`snakemake.cli.main` with the argv a user types): ~0.1 s each where a `snakemake` process takes
~1.6 s. test_bad_inputs runs them in a spawned worker process, not in pytest's own: a Snakemake
run leaves module-level state behind (storage provider proxies in module namespaces) that later
tests in the same process trip over (vLLM scans every module's namespace when it starts)."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys


def dry_run(work: str, args: list[str], record_studies: bool = False) -> tuple[int, str, list[dict]]:
    """`snakemake --dry-run <args>` in `work`: (exit status, stdout + stderr, the resolved config of
    every Study the workflow's parse built when `record_studies`)."""
    from snakemake.cli import main

    import dpolab.config

    captured, studies = io.StringIO(), []
    original = dpolab.config.load_study

    def recording(*arguments, **options):
        study = original(*arguments, **options)
        studies.append(study.to_dict())
        return study

    # what a Snakemake run changes in its process (its CLI expects to own it): restored afterwards
    previous, path = os.getcwd(), list(sys.path)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    os.chdir(work)
    if record_studies:
        dpolab.config.load_study = recording  # common.smk calls it through the module
    try:
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            try:
                main(["--dry-run", *args])
                status = 0
            except SystemExit as exit:
                status = exit.code if isinstance(exit.code, int) else 1
    finally:
        dpolab.config.load_study = original
        os.chdir(previous)
        sys.path[:] = path
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    return status, captured.getvalue(), studies
