"""``tools/analysis_tools/benchmark.py`` as a module (``tools`` is not a package): the CUDA
tests reuse its loss check and memory probes rather than re-implement them."""
import functools

from ..test_visualization._tiny_runs import load_tool


@functools.lru_cache(maxsize=None)
def benchmark():
    return load_tool('analysis_tools', 'benchmark.py')
