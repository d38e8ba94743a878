#!/usr/bin/env python3
"""Where a full evaluation's time goes, phase by phase (issue 9, goal 4).

Runs one oppsync command with `-v` (first_evaluation.sh runs `pull` through this with PHASES=1)
and, every 0.2 s, reads what the kernel counts for it: its CPU time in oppsync itself and in the
kernel (/proc/PID/stat), the bytes it wrote and read through system calls (/proc/PID/io: the
database, its journal and SQLite's temp files, whether or not they reach the disk), the memory
pages the kernel handed out (/proc/vmstat's pgalloc counters, for the whole machine, which an
otherwise idle machine spends on this command: new page-cache memory for what it writes beyond
what its files already held, and its own heap), and the size of the database file. Each `-v`
line that ends a phase ("evaluated opportunity_contact_role in 13459 ms", "built the indexes of
main.export_row in 9035 ms", ...) closes the phase at the sample that first sees it, so each
phase's figures are within 0.2 s of its own. The table is written to --table; the command's peak
RSS, user and kernel CPU seconds to --time, as `/usr/bin/time -f "%M %U %S"` writes them; the
exit code is the command's.

On these VMs a phase's kernel time follows the new page-cache memory its writes take
(tests/bench/fresh_pages.py), so the new-memory column is the one that says which phase a
redesign must make write less: bytes written over pages already cached (a sort's merge
buffers, written again and again) cost little. Bytes written minus the database's growth is
what went to SQLite's temp files (sorts, materialized rule views, their indexes).

usage: tests/bench/evaluation_phases.py --log LOG --db DB --table TABLE --time TIME -- CMD...
"""

import argparse
import os
import re
import subprocess
import sys
import time

TICK = 0.2
# Lines that end one phase, and the lines that sum phases up (not phases of their own).
PHASE_END = re.compile(r"Z ((?:evaluated|built|counted) .*) in (\d+) ms$")
SUMMARY = ("evaluated every view", "export rows evaluated in full")


def allocated():
    """Bytes of memory the kernel has handed out since boot, machine-wide."""
    with open("/proc/vmstat") as f:
        pages = sum(int(line.split()[1]) for line in f if line.startswith("pgalloc_"))
    return pages * os.sysconf("SC_PAGE_SIZE")


def sample(pid, db):
    """(user s, kernel s, bytes written, bytes read, database bytes, bytes of new memory), or
    None once it exited."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The fields after the command name, which is in parentheses and may hold spaces.
            fields = f.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/io") as f:
            io = dict(line.split(": ") for line in f.read().splitlines())
    except (FileNotFoundError, ProcessLookupError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    # utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    user, kernel = int(fields[11]) / ticks, int(fields[12]) / ticks
    size = os.stat(db).st_size if os.path.exists(db) else 0
    return (user, kernel, int(io["wchar"]), int(io["rchar"]), size, allocated())


def phases_seen(log):
    """The phase-ending lines of the log so far: (name, ms)."""
    try:
        with open(log, errors="replace") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    found = []
    for line in lines:
        m = PHASE_END.search(line)
        if m and not m.group(1).startswith(SUMMARY):
            found.append((m.group(1), int(m.group(2))))
    return found


def table(rows, total):
    out = ["| phase | wall | user CPU | kernel CPU | written | new memory | read | database grew |",
           "|---|---|---|---|---|---|---|---|"]
    for name, ms, d in rows + [("all phases, and what came before and after them", None, total)]:
        wall = f"{ms / 1000:.1f} s" if ms is not None else ""
        out.append(f"| {name} | {wall} | {d[0]:.1f} s | {d[1]:.1f} s | {d[2] / 1e9:.2f} GB "
                   f"| {d[5] / 1e9:.2f} GB | {d[3] / 1e9:.2f} GB | {d[4] / 1e9:.2f} GB |")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for option in ("--log", "--db", "--table", "--time"):
        parser.add_argument(option, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        sys.exit("evaluation_phases.py: no command to run (give it after --)")

    start_size = os.stat(args.db).st_size if os.path.exists(args.db) else 0
    first = (0.0, 0.0, 0, 0, start_size, allocated())
    with open(args.log, "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    last = first
    closed = []  # (name, ms, sample at its end)
    while True:
        now = sample(child.pid, args.db)
        # Reaped here rather than by Popen, so that wait4 gives the child's own rusage. A
        # sample taken as it exited may read an exited process: only one taken before counts.
        done, status, usage = os.wait4(child.pid, os.WNOHANG)
        if done or now is None:
            break
        last = now
        for name, ms in phases_seen(args.log)[len(closed):]:
            closed.append((name, ms, now))
        time.sleep(TICK)
    if not done:
        _, status, usage = os.wait4(child.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    child.returncode = code
    # Phases that ended after the last sample are charged with the last sample.
    for name, ms in phases_seen(args.log)[len(closed):]:
        closed.append((name, ms, last))

    rows, before = [], first
    for name, ms, at in closed:
        rows.append((name, ms, tuple(b - a for a, b in zip(before, at))))
        before = at
    end_size = os.stat(args.db).st_size if os.path.exists(args.db) else 0
    # CPU time from the child's own rusage; what it wrote, read and took up to the last sample,
    # which misses at most its last 0.2 s.
    total = (usage.ru_utime, usage.ru_stime, last[2], last[3], end_size - start_size,
             last[5] - first[5])
    with open(args.table, "w") as f:
        f.write(table(rows, total))
    with open(args.time, "w") as f:
        f.write(f"{usage.ru_maxrss} {usage.ru_utime:.2f} {usage.ru_stime:.2f}\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
