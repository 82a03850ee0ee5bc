"""Data sets of mae-mm (registered in ``mae_mm.registry.DATASETS``)."""
from .array_dataset import ArrayImageDataset, FashionMNIST, read_idx_gz, stratified_subset
from .image_folder import IMG_EXTENSIONS, ImageFolder, scan_images
from .transforms import LoadImageSafe, reset_skipped_image_count, skipped_image_count
from .webdataset_shards import WebDatasetShards, index_shards, tar_members

__all__ = ['ImageFolder', 'IMG_EXTENSIONS', 'scan_images', 'ArrayImageDataset', 'FashionMNIST',
           'read_idx_gz', 'stratified_subset', 'LoadImageSafe', 'skipped_image_count',
           'reset_skipped_image_count', 'WebDatasetShards', 'index_shards', 'tar_members']
