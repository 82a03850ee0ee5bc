"""The single source of mae-mm's version (setup.py reads this file)."""

__version__ = '0.1.0'
version_info = tuple(int(p) if p.isdigit() else p for p in __version__.split('.'))
