"""``tools/analysis_tools/benchmark.py`` as a module (``tools`` is not a package): the CUDA
tests reuse its loss check and memory probes rather than re-implement them."""
import functools
import importlib.util
import os.path as osp
import sys

from ..conftest import REPO_ROOT

TOOLS = osp.join(REPO_ROOT, 'tools', 'analysis_tools')


@functools.lru_cache(maxsize=None)
def benchmark():
    if TOOLS not in sys.path:  # benchmark.py imports its sibling benchmark_models
        sys.path.insert(0, TOOLS)
    spec = importlib.util.spec_from_file_location('mae_mm_benchmark_cuda_tests',
                                                  osp.join(TOOLS, 'benchmark.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
