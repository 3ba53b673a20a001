#!/usr/bin/env python3
"""What storing an upload's sealed images costs the machine: in SQLite's pages, as the embedded
store keeps them, against a file per image beside the database with only a small row in SQLite.

Each upload stores two sealed images in one transaction (by default of the sizes of the two photos
`finalize-bench` uploads, obama.jpg and obama2.jpg, sealed; `SIZES=BYTES,BYTES` to change them),
on a WAL database with synchronous=NORMAL and a passive checkpoint every 20 ms on a second
connection, as `backend/src/store/sqlite.rs` does. The file variants write each image to a file
of its own first (written, then renamed), without and with fdatasync. The measure is the whole
machine's busy CPU (/proc/stat: every process and the kernel's writeback threads, so the WAL's
copy into the database counts too), ending with a sync so that every byte written is paid for
inside the run. Run it on an otherwise idle machine; `DIR` is where the files go (default: the
current directory).

Usage: tests/perf/media-storage-cost.py [UPLOADS [ROUNDS]]   (1500 uploads, 3 rounds by default)
Needs: python3 (standard library only).
"""

import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time

SIZES = [int(s) for s in os.environ.get("SIZES", "279950,184483").split(",")]


def busy_seconds():
    """Busy CPU time of the whole machine: everything but idle and I/O wait."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def checkpointer(path, stop):
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    while not stop.wait(0.02):
        connection.execute("pragma wal_checkpoint(passive)")
    connection.close()


def run(variant, uploads):
    work = tempfile.mkdtemp(prefix="media-storage-cost-", dir=os.environ.get("DIR", "."))
    try:
        path = os.path.join(work, "idyntra.db")
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("pragma journal_mode=wal")
        db.execute("pragma synchronous=normal")
        db.execute("pragma wal_autocheckpoint=16384")
        db.execute(
            "create table media (session_id text, role text, idx integer, "
            "sealed blob, file text, primary key (session_id, role))"
        )
        images = [os.urandom(size) for size in SIZES]
        stop = threading.Event()
        thread = threading.Thread(target=checkpointer, args=(path, stop))
        thread.start()
        os.sync()
        busy, wall = busy_seconds(), time.monotonic()
        for upload in range(uploads):
            session = f"ses_{upload:08d}"
            rows = []
            for role, image in enumerate(images):
                if variant == "sqlite":
                    rows.append((session, str(role), 0, image, None))
                    continue
                name = os.path.join(work, f"{session}-{role}")
                descriptor = os.open(name + ".part", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(descriptor, image)
                if variant == "file+fdatasync":
                    os.fdatasync(descriptor)
                os.close(descriptor)
                os.rename(name + ".part", name)
                rows.append((session, str(role), 0, b"", name))
            db.execute("begin")
            db.executemany("insert into media values (?, ?, ?, ?, ?)", rows)
            db.execute("commit")
        stop.set()
        thread.join()
        db.execute("pragma wal_checkpoint(truncate)")
        os.sync()
        busy, wall = busy_seconds() - busy, time.monotonic() - wall
        db.close()
        return busy * 1000 / uploads, wall * 1000 / uploads
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    uploads = int(sys.argv[1]) if len(sys.argv) > 1 else 1500
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    print(f"{uploads} uploads of {' + '.join(str(s) for s in SIZES)} bytes each, {rounds} rounds")
    print("| round | variant | machine CPU ms per upload | wall ms per upload |")
    print("|---|---|---|---|")
    for round_ in range(1, rounds + 1):
        for variant in ("sqlite", "file", "file+fdatasync"):
            cpu, wall = run(variant, uploads)
            print(f"| {round_} | {variant} | {cpu:.2f} | {wall:.2f} |", flush=True)


if __name__ == "__main__":
    main()
