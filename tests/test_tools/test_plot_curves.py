"""tools/analysis_tools/plot_curves.py on the JSON log of a real short Runner run."""
import json
import math
import os.path as osp

import pytest
from PIL import Image

from ..test_visualization._tiny_runs import load_tool, run_tiny_pretraining

def _tool():
    return load_tool('analysis_tools', 'plot_curves.py')


def test_curves_of_a_real_run(photo_folder, tmp_path, capsys):
    work_dir = tmp_path / 'work'
    run_tiny_pretraining(photo_folder, work_dir, epochs=2)  # 4 iterations, logged each
    tool = _tool()
    out = tmp_path / 'curves.png'
    assert tool.main([str(work_dir), '--out', str(out)]) == str(out)
    assert 'work: loss: 4 points, lr: 4 points' in capsys.readouterr().out
    with Image.open(out) as img:
        img.verify()
    series, from_validation = tool.read_series(tool.find_json_logs(str(work_dir)),
                                               ['loss', 'lr', 'absent'])
    assert set(series) == {'loss', 'lr'} and not from_validation
    assert [x for x, _ in series['lr']] == [1.0, 2.0, 3.0, 4.0]
    # The lr used at iteration k: cosine over the 4 iterations from tiny_pretrain_cfg's 2e-3.
    expected = [1e-3 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]
    assert [y for _, y in series['lr']] == pytest.approx(expected, rel=1e-9)
    assert all(0 < y < 10 for _, y in series['loss'])


def test_resumed_run_keeps_the_later_value_and_validation_keys(tmp_path):
    """Two runs in one work dir (a resume re-logs step 2); validation lines without lr."""
    work_dir = tmp_path / 'work'
    runs = {
        '20260101_000000': [dict(lr=0.1, loss=3.0, iter=1, step=1),
                            dict(lr=0.1, loss=2.0, iter=2, step=2)],
        '20260101_010000': [dict(lr=0.1, loss=1.5, iter=2, step=2),
                            dict(lr=0.05, loss=1.0, iter=3, step=3),
                            {'accuracy/top1': 42.0, 'step': 1}],
    }
    for stamp, lines in runs.items():
        folder = work_dir / stamp / 'vis_data'
        folder.mkdir(parents=True)
        (folder / f'{stamp}.json').write_text(''.join(json.dumps(line) + '\n'
                                                      for line in lines))
    tool = _tool()
    logs = tool.find_json_logs(str(work_dir))
    assert [osp.basename(p) for p in logs] == ['20260101_000000.json', '20260101_010000.json']
    series, from_validation = tool.read_series(logs, ['loss', 'accuracy/top1'])
    assert series['loss'] == [(1.0, 3.0), (2.0, 1.5), (3.0, 1.0)]
    assert series['accuracy/top1'] == [(1.0, 42.0)] and from_validation == {'accuracy/top1'}
    out = tmp_path / 'c.png'
    tool.main([str(work_dir), str(logs[0]), '--keys', 'loss', 'accuracy/top1', '--legend', 'a',
               'b', '--out', str(out)])
    assert out.is_file()


def test_bad_input_fails_in_one_line(tmp_path):
    tool = _tool()
    with pytest.raises(SystemExit, match='does not exist'):
        tool.main([str(tmp_path / 'nowhere')])
    with pytest.raises(SystemExit, match='no <timestamp>/vis_data/<timestamp>.json'):
        tool.main([str(tmp_path)])
    log = tmp_path / 'log.json'
    log.write_text('{"lr": 1, "step": 1}\n')
    with pytest.raises(SystemExit, match='none of the keys'):
        tool.main([str(log), '--keys', 'loss_x', '--out', str(tmp_path / 'c.png')])
    with pytest.raises(SystemExit, match='one label per log'):
        tool.main([str(log), '--legend', 'a', 'b'])


def test_default_output_goes_into_the_work_dir_titled_with_the_run(tmp_path, monkeypatch):
    """Without --out the PNG is written into the run's work dir (not the current directory),
    and the figure is titled with the run's name."""
    work_dir = tmp_path / 'work_dirs' / 'quickstart'
    stamp = '20260101_000000'
    (work_dir / stamp / 'vis_data').mkdir(parents=True)
    log = work_dir / stamp / 'vis_data' / f'{stamp}.json'
    log.write_text('{"lr": 0.1, "loss": 1.0, "step": 1}\n{"lr": 0.1, "loss": 0.5, "step": 2}\n')
    tool = _tool()
    titles = []
    real = tool.plot_curves

    def recording(*args, **kwargs):
        titles.append(kwargs.get('title'))
        return real(*args, **kwargs)

    monkeypatch.setattr(tool, 'plot_curves', recording)
    monkeypatch.chdir(tmp_path)
    expected = str(work_dir / 'curves.png')
    for path in (work_dir, work_dir / stamp, log):  # work dir, run dir or the JSON file
        assert tool.main([str(path)]) == expected
    assert osp.isfile(expected) and not (tmp_path / 'curves.png').exists()
    assert titles == ['quickstart', f'quickstart/{stamp}', f'quickstart/{stamp}']
    other = tmp_path / 'elsewhere' / 'c.png'
    assert tool.main([str(work_dir), '--out', str(other), '--title', 'T']) == str(other)
    assert titles[-1] == 'T' and other.is_file()
