"""The watcher's readiness rules, with a fake file system and clocks: no
broker, no sleeping."""
from pathlib import Path
from types import SimpleNamespace

from ingestd.daemon.settle import Readiness


class FakeFiles:
    """``lstat`` of a few files whose size and mtime the test sets."""

    def __init__(self):
        self.files: dict[str, tuple[int, int]] = {}
        self.stats = 0

    def write(self, key: str, size: int, mtime_s: float) -> None:
        self.files[key] = (size, int(mtime_s * 1e9))

    def lstat(self, path: Path) -> SimpleNamespace:
        self.stats += 1
        key = path.relative_to("/zone").as_posix()
        if key not in self.files:
            raise FileNotFoundError(path)
        size, mtime_ns = self.files[key]
        return SimpleNamespace(st_size=size, st_mtime_ns=mtime_ns)


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def readiness(files, clock, wall, open_elsewhere=lambda path: False, settle=2.0):
    return Readiness(Path("/zone"), settle, stat=files.lstat, clock=clock, wall_clock=wall,
                     open_elsewhere=open_elsewhere)


def test_a_file_that_stops_changing_is_ready_after_the_settle_time_not_before():
    files, clock, wall = FakeFiles(), Clock(), Clock(50_000.0)
    files.write("a/x.csv", 10, wall.now)
    r = readiness(files, clock, wall)
    assert r.note("a/x.csv", complete=False) is True
    assert r.ready() == []
    clock.now += 1.0
    wall.now += 1.0
    files.write("a/x.csv", 20, wall.now)  # still growing
    r.note("a/x.csv", complete=False)
    clock.now += 1.5
    wall.now += 1.5
    assert r.ready() == []  # 1.5 s since the last change: not yet
    clock.now += 0.6
    wall.now += 0.6
    assert r.ready() == ["a/x.csv"]
    assert r.pending["a/x.csv"].size == 20


def test_a_file_closed_after_writing_or_renamed_into_place_is_ready_at_once():
    files, clock, wall = FakeFiles(), Clock(), Clock(50_000.0)
    files.write("a/x.csv", 10, wall.now)
    r = readiness(files, clock, wall)
    r.note("a/x.csv", complete=True)
    assert r.ready() == ["a/x.csv"]


def test_a_change_seen_at_the_check_restarts_the_settle_time_and_drops_completeness():
    files, clock, wall = FakeFiles(), Clock(), Clock(50_000.0)
    files.write("a/x.csv", 10, wall.now)
    r = readiness(files, clock, wall)
    r.note("a/x.csv", complete=True)
    files.write("a/x.csv", 11, wall.now + 0.1)  # written again after the close
    assert r.ready() == []
    assert r.pending["a/x.csv"].complete is False
    clock.now += 2.1
    wall.now += 2.1
    assert r.ready() == ["a/x.csv"]


def test_an_old_file_found_by_a_scan_is_ready_at_once_by_its_mtime():
    files, clock, wall = FakeFiles(), Clock(), Clock(50_000.0)
    files.write("a/old.csv", 10, wall.now - 3600)
    r = readiness(files, clock, wall)
    r.note("a/old.csv", complete=False)
    assert r.ready() == ["a/old.csv"]


def test_a_file_held_open_for_writing_waits_even_when_settled():
    files, clock, wall = FakeFiles(), Clock(), Clock(50_000.0)
    files.write("a/x.csv", 10, wall.now - 3600)
    writers = {"/zone/a/x.csv"}
    r = readiness(files, clock, wall, open_elsewhere=lambda path: str(path) in writers)
    r.note("a/x.csv", complete=False)
    assert r.ready() == []
    writers.clear()
    assert r.ready() == ["a/x.csv"]


def test_a_vanished_file_is_dropped_and_an_unchanged_published_one_is_not_pending_again():
    files, clock, wall = FakeFiles(), Clock(), Clock(50_000.0)
    files.write("a/x.csv", 10, wall.now - 3600)
    files.write("a/gone.csv", 10, wall.now - 3600)
    r = readiness(files, clock, wall)
    r.note("a/x.csv", complete=False)
    r.note("a/gone.csv", complete=False)
    del files.files["a/gone.csv"]
    assert r.ready() == ["a/x.csv"]
    assert "a/gone.csv" not in r.pending
    entry = r.published_now("a/x.csv")
    assert (entry.size, r.published["a/x.csv"]) == (10, (10, files.files["a/x.csv"][1]))
    assert r.note("a/x.csv", complete=False) is False  # a rescan: same size and mtime
    files.write("a/x.csv", 12, wall.now)  # rewritten later: published anew
    assert r.note("a/x.csv", complete=False) is True
    r.forget("a/x.csv")
    assert r.pending == {} and r.published == {}


def test_a_file_not_yet_due_is_not_stat_ed_on_every_pass():
    files, clock, wall = FakeFiles(), Clock(), Clock(50_000.0)
    files.write("a/x.csv", 10, wall.now)
    r = readiness(files, clock, wall)
    r.note("a/x.csv", complete=False)
    before = files.stats
    for _ in range(100):
        assert r.ready() == []
    assert files.stats == before


def test_published_entries_of_files_moved_away_are_forgotten():
    files, clock, wall = FakeFiles(), Clock(), Clock(50_000.0)
    files.write("a/x.csv", 10, wall.now - 3600)
    r = readiness(files, clock, wall)
    r.note("a/x.csv", complete=True)
    r.published_now("a/x.csv")
    r.forget_missing(exists=lambda path: path.relative_to("/zone").as_posix() in files.files)
    assert "a/x.csv" in r.published
    del files.files["a/x.csv"]
    r.forget_missing(exists=lambda path: path.relative_to("/zone").as_posix() in files.files)
    assert r.published == {}
