#!/usr/bin/env python3
"""What this machine charges for writing file pages it has not written lately (issue 9, goal 4).

A first full evaluation at 1M opportunities wrote about 13 GB of new file data (0670f2f, counted
with strace): 8.3 GB of SQLite temp files (sorts and the materialized rule views), 2.3 GB of WAL
and 2.3 GB copied from it into the database; since e06351a the rows go straight into the
database, without the WAL. On these VMs the kernel time of that evaluation moves from one day
to the next (23-72 s for the same build on the same data), and a profile puts it in the copy
of each written page into the page cache (`copy_folio_from_iter_atomic`) and the zeroing of
new page-cache memory, not in the reads. This measures that cost directly, so that an
evaluation's figures can be read against the machine's state on the day:

- writes 8 KiB pages (SQLite's page size here) to a new file, one GiB at a time, each GiB
  synced so that dirty pages never pile up, and prints the microseconds per page of each GiB;
- then writes the same pages again over the file, whose pages are now in the page cache.

Where new pages cost many times what overwritten ones do past the first few GiB, the machine
is most likely charging for memory the guest gave back to its host when it was freed
(virtio-balloon free page reporting, on here; see /sys/module/page_reporting): a first
evaluation's kernel time then follows the bytes it writes, not its page reads. On 2026-12-06,
2.7-3.3 us a new page for the first 6 GiB, then 21.8 and 67.7 us, against 1.9-4.0 us
overwritten; earlier the same day the jump came after 3 GiB. How far the cheap part goes
depends on what was freed lately.

usage: tests/bench/fresh_pages.py [GIB] [DIR]
  defaults: 8 GiB (twice: 16 GiB written), in /var/tmp (where SQLite puts its temp files)
"""

import os
import sys
import tempfile
import time

PAGE = 8192
PAGES_PER_GIB = (1 << 30) // PAGE


def write_gib(fd, first_page, page):
    """Writes one GiB of pages from page number `first_page`; the CPU microseconds per page."""
    started = time.process_time()
    for n in range(first_page, first_page + PAGES_PER_GIB):
        os.pwrite(fd, page, n * PAGE)
    spent = time.process_time() - started
    os.fsync(fd)
    return spent / PAGES_PER_GIB * 1e6


def main():
    gib = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    directory = sys.argv[2] if len(sys.argv) > 2 else "/var/tmp"
    if gib < 1:
        sys.exit("fresh_pages.py: GIB must be at least 1")
    page = os.urandom(PAGE)
    fd, path = tempfile.mkstemp(prefix="fresh_pages.", dir=directory)
    try:
        for label in ("new", "overwritten"):
            costs = [write_gib(fd, i * PAGES_PER_GIB, page) for i in range(gib)]
            shown = " ".join(f"{c:6.1f}" for c in costs)
            print(f"{label:>11} pages, us of CPU per 8 KiB page, GiB by GiB: {shown}", flush=True)
    finally:
        os.close(fd)
        os.unlink(path)


if __name__ == "__main__":
    main()
