"""Plot training curves (loss, learning rate, ...) from MMEngine's JSON scalar logs, as a PNG.

Reads ``<work_dir>/<timestamp>/vis_data/<timestamp>.json`` (one JSON object per logged
iteration, written by ``LoggerHook``). A work dir with several runs (a resumed job) is read in
timestamp order; a step logged twice keeps the later value. Several work dirs are overlaid, one
line each, e.g. to compare ablations. The PNG goes into the (first) run's work dir unless
``--out`` says otherwise, and is titled with the run's name. Examples::

    python tools/analysis_tools/plot_curves.py work_dirs/quickstart   # work_dirs/quickstart/curves.png
    python tools/analysis_tools/plot_curves.py work_dirs/a work_dirs/b --keys loss lr \\
        --legend depth-1 depth-8 --out curves.png
    python tools/analysis_tools/plot_curves.py work_dirs/x/20260101_000000   # one run of a work dir
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Tuple

TIMESTAMP = re.compile(r'^\d{8}_\d{6}$')
Series = Dict[str, List[Tuple[float, float]]]


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """The options of this tool; ``argv`` defaults to ``sys.argv[1:]``."""
    parser = argparse.ArgumentParser(description='Plot loss / lr curves from MMEngine logs')
    parser.add_argument('logs', nargs='+', help='work dirs, run dirs (<work_dir>/<timestamp>) '
                        'or JSON scalar log files')
    parser.add_argument('--keys', nargs='+', default=['loss', 'lr'],
                        help='scalars to plot, one panel each (default: loss lr)')
    parser.add_argument('--legend', nargs='+', help='one label per log (default: folder names)')
    parser.add_argument('--log-y', nargs='*', default=[], metavar='KEY',
                        help='keys drawn on a log y scale (default: none)')
    parser.add_argument('--title', help='figure title (default: the run names)')
    parser.add_argument('--out', help='output PNG (default: curves.png in the work dir of the '
                        'first log)')
    return parser.parse_args(argv)


def work_dir_of(path: str) -> str:
    """The work dir a log path belongs to: the path itself for a work dir, the parent of a run
    dir (``<work_dir>/<timestamp>``), and ``<work_dir>`` of ``<timestamp>/vis_data/*.json``."""
    path = osp.abspath(path)
    if osp.isfile(path):
        folder = osp.dirname(path)
        if osp.basename(folder) == 'vis_data' and TIMESTAMP.match(
                osp.basename(osp.dirname(folder))):
            return osp.dirname(osp.dirname(folder))
        return folder
    return osp.dirname(path) if TIMESTAMP.match(osp.basename(path)) else path


def run_name(path: str) -> str:
    """The name of the run a log path holds: its work dir's name, with ``/<timestamp>`` when the
    path picks one run of it (e.g. ``quickstart`` or ``quickstart/20260101_000000``)."""
    work_dir = work_dir_of(path)
    name = osp.basename(work_dir)
    rest = osp.relpath(osp.abspath(path), work_dir)
    stamp = rest.split(os.sep)[0]
    return f'{name}/{stamp}' if TIMESTAMP.match(stamp) else name


def find_json_logs(path: str) -> List[str]:
    """The JSON scalar logs of a work dir, run dir or file, oldest run first.

    Raises:
        FileNotFoundError: Nothing to read at ``path`` (one line naming what was looked for).
    """
    if osp.isfile(path):
        return [path]
    if not osp.isdir(path):
        raise FileNotFoundError(f'log path {path!r} does not exist: give a work dir, a run dir '
                                'or a <timestamp>.json file')
    name = osp.basename(osp.normpath(path))
    run_dirs = [path] if TIMESTAMP.match(name) else sorted(
        d for d in glob.glob(osp.join(path, '*')) if TIMESTAMP.match(osp.basename(d)))
    logs = []
    for run in run_dirs:
        stamp = osp.basename(osp.normpath(run))
        candidate = osp.join(run, 'vis_data', f'{stamp}.json')
        if osp.isfile(candidate):
            logs.append(candidate)
    if not logs:
        raise FileNotFoundError(f'no <timestamp>/vis_data/<timestamp>.json under {path!r}: is '
                                'it an MMEngine work dir of a run that logged (LoggerHook)?')
    return logs


def read_series(json_logs: Sequence[str], keys: Sequence[str]) -> Tuple[Series, set]:
    """``{key: [(step, value), ...]}`` from the logs, sorted by step.

    Training lines (they carry ``lr``) are logged at the iteration; other lines are
    validation results, logged at the validation step (the epoch in epoch-based runs). A key
    is read from training lines when they have it, else from validation lines. A repeated step
    (a resumed run re-logging it) keeps the value of the later log.

    Args:
        json_logs (Sequence[str]): Files in chronological order.
        keys (Sequence[str]): Scalars to read.

    Returns:
        tuple: The series of every key found, and the set of keys read from validation lines.
    """
    train_points: Dict[str, Dict[float, float]] = {k: {} for k in keys}
    other_points: Dict[str, Dict[float, float]] = {k: {} for k in keys}
    for log in json_logs:
        with open(log, encoding='utf-8') as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    raise ValueError(f'{log}:{number} is not a JSON line: is it an MMEngine '
                                     'scalar log (vis_data/<timestamp>.json)?') from None
                if 'step' not in record:
                    continue
                points = train_points if 'lr' in record else other_points
                for key in keys:
                    if isinstance(record.get(key), (int, float)):
                        points[key][float(record['step'])] = float(record[key])
    series, from_validation = {}, set()
    for key in keys:
        chosen = train_points[key] or other_points[key]
        if chosen:
            series[key] = sorted(chosen.items())
        if not train_points[key] and other_points[key]:
            from_validation.add(key)
    return series, from_validation


def plot_curves(runs: Dict[str, Series], keys: Sequence[str], out: str,
                validation_keys: Sequence[str] = (), log_y: Sequence[str] = (),
                title: Optional[str] = None) -> str:
    """One panel per key, one line per run; writes ``out`` (PNG).

    Args:
        runs (dict): ``{label: series}`` from :func:`read_series`.
        keys (Sequence[str]): Keys to draw, in panel order (absent ones are skipped).
        out (str): Output PNG.
        validation_keys (Sequence[str]): Keys logged at validation steps (x labelled so).
        log_y (Sequence[str]): Keys drawn on a log scale.
        title (str, optional): Figure title.

    Returns:
        str: ``out``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    keys = [k for k in keys if any(k in series for series in runs.values())]
    fig, axes = plt.subplots(len(keys), 1, squeeze=False,
                             figsize=(7, 2.6 * len(keys) + 0.6))
    for ax, key in zip(axes[:, 0], keys):
        for label, series in runs.items():
            if key in series:
                xs, ys = zip(*series[key])
                ax.plot(xs, ys, label=label, linewidth=1.2,
                        marker='o' if len(xs) < 20 else None, markersize=3)
        ax.set_ylabel(key)
        if key in log_y and all(y > 0 for s in runs.values() for _, y in s.get(key, [])):
            ax.set_yscale('log')
        ax.grid(alpha=0.3)
        ax.set_xlabel('validation step' if key in validation_keys else 'iteration', fontsize=8)
        if len(runs) > 1:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv: Optional[List[str]] = None) -> str:
    """Entry point; returns the path of the PNG."""
    args = parse_args(argv)
    if args.out is not None and not args.out.lower().endswith('.png'):
        raise SystemExit(f'--out must name a .png file, got {args.out!r}')
    if args.legend is not None and len(args.legend) != len(args.logs):
        raise SystemExit(f'--legend has {len(args.legend)} labels for {len(args.logs)} logs: '
                         'give one label per log')
    labels = args.legend or [run_name(p) for p in args.logs]
    if not args.legend and len(set(labels)) < len(labels):  # two "work" dirs, two folders
        labels = [osp.normpath(p) for p in args.logs]
    out = args.out or osp.join(work_dir_of(args.logs[0]), 'curves.png')
    title = args.title or ' vs '.join(run_name(p) for p in args.logs)
    runs, validation_keys = {}, set()
    for label, path in zip(labels, args.logs):
        try:
            runs[label], from_validation = read_series(find_json_logs(path), args.keys)
        except (FileNotFoundError, ValueError) as err:
            raise SystemExit(str(err)) from None
        validation_keys |= from_validation
    if not any(runs.values()):
        raise SystemExit(f'none of the keys {args.keys} is in the logs: check --keys against '
                         'the names in the JSON lines')
    plot_curves(runs, args.keys, out, validation_keys=validation_keys, log_y=args.log_y,
                title=title)
    for label, series in runs.items():
        found = ', '.join(f'{k}: {len(v)} points' for k, v in series.items())
        print(f'{label}: {found}')
    print(f'curves: {out}')
    return out


if __name__ == '__main__':
    main()
