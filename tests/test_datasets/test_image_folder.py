import os
import os.path as osp

import pytest
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import init_default_scope

from mae_mm.datasets import ImageFolder, scan_images
from mae_mm.registry import DATASETS

from ._image_utils import write_image


@pytest.fixture
def unlabelled(tmp_path):
    root = tmp_path / 'data'
    for rel in ['b.png', 'a.JPG', 'sub/c.jpeg', 'sub/deeper/d.bmp', 'e.webp', 'f.tif']:
        write_image(str(root / 'train' / rel))
    (root / 'train' / 'notes.txt').write_text('not an image')
    write_image(str(root / 'train' / '.hidden' / 'x.png'))
    write_image(str(root / 'train' / '.y.png'))
    return str(root)


@pytest.fixture
def labelled(tmp_path):
    root = tmp_path / 'imagenet'
    for cls, names in {'n02': ['1.jpg', '2.png'], 'n01': ['z.jpeg', 'sub/y.jpg'],
                       'n03': ['a.png']}.items():
        for name in names:
            write_image(str(root / 'val' / cls / name))
    write_image(str(root / 'val' / 'stray.png'))  # not inside a class folder: ignored
    return str(root)


def test_scan_recursive_sorted_and_filtered(unlabelled):
    ds = ImageFolder(unlabelled, data_prefix='train')
    rel = [osp.relpath(ds.get_data_info(i)['img_path'], osp.join(unlabelled, 'train'))
           for i in range(len(ds))]
    assert rel == ['a.JPG', 'b.png', 'e.webp', 'f.tif', 'sub/c.jpeg', 'sub/deeper/d.bmp']
    assert 'gt_label' not in ds.get_data_info(0)
    assert scan_images(osp.join(unlabelled, 'train'), ['.png']) == ['b.png']


def test_data_prefix_empty_dict_and_absolute(unlabelled):
    assert len(ImageFolder(osp.join(unlabelled, 'train'))) == 6
    assert len(ImageFolder(unlabelled, data_prefix=dict(img_path='train'))) == 6
    assert len(ImageFolder('', data_prefix=osp.join(unlabelled, 'train'))) == 6


def test_extension_filter_is_case_insensitive(unlabelled):
    ds = ImageFolder(unlabelled, 'train', extensions=('JPG', '.PNG'))
    names = sorted(osp.basename(ds.get_data_info(i)['img_path']) for i in range(len(ds)))
    assert names == ['a.JPG', 'b.png']
    with pytest.raises(ValueError, match='extensions'):
        ImageFolder(unlabelled, 'train', extensions=())


def test_labelled_class_mapping(labelled):
    ds = ImageFolder(labelled, 'val', with_label=True)
    assert ds.metainfo['classes'] == ('n01', 'n02', 'n03')
    infos = [ds.get_data_info(i) for i in range(len(ds))]
    got = [(osp.relpath(d['img_path'], osp.join(labelled, 'val')), d['gt_label']) for d in infos]
    assert got == [('n01/sub/y.jpg', 0), ('n01/z.jpeg', 0), ('n02/1.jpg', 1), ('n02/2.png', 1),
                   ('n03/a.png', 2)]
    assert all(isinstance(d['gt_label'], int) for d in infos)
    assert ds.get_gt_labels().tolist() == [0, 0, 1, 1, 2]
    assert ds.get_cat_ids(2) == [1]


def test_labelled_classes_from_metainfo_and_lazy(labelled):
    ds = ImageFolder(labelled, 'val', with_label=True, metainfo=dict(classes=('n03', 'n01')),
                     lazy_init=True, serialize_data=False)
    ds.full_init()
    assert ds.metainfo['classes'] == ('n03', 'n01')
    assert ds.get_gt_labels().tolist() == [0, 1, 1]
    with pytest.raises(FileNotFoundError, match=r"\['n09'\] have no folder"):
        ImageFolder(labelled, 'val', with_label=True, metainfo=dict(classes=('n01', 'n09')))


def test_indices_subset(labelled):
    assert len(ImageFolder(labelled, 'val', with_label=True, indices=2)) == 2


def _one_line(err) -> str:
    msg = str(err.value)
    assert '\n' not in msg
    return msg


def test_error_missing_root(tmp_path):
    missing = str(tmp_path / 'data' / 'imagenet')
    for lazy in (False, True):  # raised in __init__, before any scan, even when lazy
        with pytest.raises(FileNotFoundError) as err:
            ImageFolder(missing, data_prefix='train', lazy_init=lazy)
        msg = _one_line(err)
        assert osp.join(missing, 'train') in msg and 'does not exist' in msg
        assert 'train_dataloader.dataset.data_root' in msg
    with pytest.raises(FileNotFoundError) as err:
        ImageFolder(missing, test_mode=True)
    assert 'val_dataloader.dataset.data_root' in _one_line(err)


def test_error_no_images(tmp_path):
    (tmp_path / 'empty' / 'sub').mkdir(parents=True)
    (tmp_path / 'empty' / 'readme.txt').write_text('x')
    with pytest.raises(FileNotFoundError) as err:
        ImageFolder(str(tmp_path / 'empty'))
    msg = _one_line(err)
    assert msg.startswith('no images with extensions') and 'empty' in msg
    assert '.jpg' in msg and 'extensions' in msg


def test_error_no_class_folders(tmp_path):
    write_image(str(tmp_path / 'flat' / 'a.png'))
    with pytest.raises(FileNotFoundError) as err:
        ImageFolder(str(tmp_path / 'flat'), with_label=True)
    msg = _one_line(err)
    assert 'with_label=True' in msg and 'subfolder per class' in msg
    assert 'with_label=False' in msg


def test_class_folders_without_images(tmp_path):
    (tmp_path / 'cls' / 'a').mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match='no images with extensions'):
        ImageFolder(str(tmp_path / 'cls'), with_label=True)


def test_ann_file(labelled):
    ann = osp.join(labelled, 'meta', 'val.txt')
    os.makedirs(osp.dirname(ann))
    with open(ann, 'w') as f:
        f.write('# comment\nn02/1.jpg 1\n\nn01/z.jpeg 0\n')
    ds = ImageFolder(labelled, 'val', with_label=True, ann_file='meta/val.txt')
    assert [(osp.basename(ds.get_data_info(i)['img_path']), ds.get_data_info(i)['gt_label'])
            for i in range(len(ds))] == [('1.jpg', 1), ('z.jpeg', 0)]
    assert len(ImageFolder(labelled, 'val', ann_file=ann)) == 2  # absolute, labels ignored

    with open(ann, 'a') as f:
        f.write('n03/a.png\n')
    with pytest.raises(ValueError) as err:
        ImageFolder(labelled, 'val', with_label=True, ann_file='meta/val.txt')
    assert f'{ann}:5' in _one_line(err)
    with pytest.raises(FileNotFoundError) as err:
        ImageFolder(labelled, 'val', ann_file='meta/nope.txt')
    assert 'ann_file' in _one_line(err)


def test_build_from_registry(unlabelled):
    init_default_scope('mae_mm')
    ds = DATASETS.build(dict(type='ImageFolder', data_root=unlabelled, data_prefix='train'))
    assert isinstance(ds, ImageFolder) and len(ds) == 6
    # From another scope (mmpretrain/mmdet configs), by prefix through the mmengine root.
    ds = MMENGINE_DATASETS.build(dict(type='mae_mm.ImageFolder', data_root=unlabelled,
                                      data_prefix='train'))
    assert isinstance(ds, ImageFolder)
