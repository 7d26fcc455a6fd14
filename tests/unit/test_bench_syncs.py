"""The bench's count of the box's sync calls from perf stat and strace output
(tests/bench/measure.py)."""

from tests.bench.measure import count_calls, parse_perf_stat

TRACE = """\
4101  1700000000.100000 fsync(7)        = 0
4102  1700000000.200000 fdatasync(9 <unfinished ...>
4101  1700000000.250000 fsync(7)        = 0
4102  1700000000.300000 <... fdatasync resumed>) = 0
4103  1700000000.400000 msync(0x7f0000000000, 4096, MS_SYNC) = 0
[pid  4104] 1700000000.500000 fsync(3) = 0
4101  1700000000.600000 --- SIGTERM {si_signo=SIGTERM, si_code=SI_USER} ---
4101  1700000001.000000 fsync(7)        = 0
4101  1700000001.100000 +++ exited with 0 +++
"""


def test_each_call_counts_once_at_its_start_within_the_window() -> None:
    assert count_calls(TRACE, 1700000000.15, 1700000000.55) == {
        "fdatasync": 1, "fsync": 2, "msync": 1}


def test_calls_outside_the_window_do_not_count() -> None:
    assert count_calls(TRACE, 0, 1700000000.05) == {}
    assert count_calls(TRACE, 1700000000.9, 1800000000) == {"fsync": 1}


PERF = """\
# started on Thu Dec  3 17:20:00 2026

12,,syscalls:sys_enter_fsync,2003944,100.00,,
1501,,syscalls:sys_enter_fdatasync,2003944,100.00,,
<not counted>,,syscalls:sys_enter_msync,0,0.00,,
0,,syscalls:sys_enter_sync_file_range,2003944,100.00,,
"""


def test_perf_stat_counts_per_syscall() -> None:
    assert parse_perf_stat(PERF) == {"fsync": 12, "fdatasync": 1501, "msync": 0,
                                     "sync_file_range": 0}
