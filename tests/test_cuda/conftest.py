"""The CUDA tests: say once, at the end of the run, why they were skipped (without ``-rs``
pytest only counts skips)."""
from ._device import SKIP_REASON


def pytest_terminal_summary(terminalreporter):
    skipped = [report for report in terminalreporter.stats.get('skipped', [])
               if 'test_cuda' in report.nodeid and SKIP_REASON in str(report.longrepr)]
    if skipped:
        terminalreporter.write_line(f'tests/test_cuda: {len(skipped)} skipped: {SKIP_REASON}')
