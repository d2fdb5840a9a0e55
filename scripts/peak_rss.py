"""Run a Python module or script and report its peak RSS on the last line of stderr.

    python scripts/peak_rss.py -m nsml_etl.cli load runs.jsonl ...
    python scripts/peak_rss.py bench/baseline_to_sql.py runs.jsonl sqlite:///x.db

Reads VmHWM from /proc/self/status at exit: unlike getrusage(), which keeps counting across
fork+exec, it covers only this program, not the memory of whatever process spawned it.
"""

import atexit
import runpy
import sys


def _report() -> None:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                kib = int(line.split()[1])
                print(f"peak_rss_kib={kib}", file=sys.stderr)


def main() -> None:
    args = sys.argv[1:]
    atexit.register(_report)
    if args[:1] == ["-m"]:
        sys.argv = [args[1], *args[2:]]
        runpy.run_module(args[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = args
        runpy.run_path(args[0], run_name="__main__")


if __name__ == "__main__":
    main()
