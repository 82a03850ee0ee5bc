"""Packaging for mae-mm.

``pip install .`` (non-editable) ships ``mae_mm/.mim/{configs,tools,projects,model-index.yml}`` so
that ``mim train mae_mm <config>`` finds configs and tools, as mmpretrain does with the same helper
(``projects/`` holds the ViTDet and UperNet text recipes).

It also ships ``mae_mm/configs/**.py`` (package data, listed in MANIFEST.in; not a Python
package, so ``import mae_mm`` never imports it): the pure-Python recipes that a user's own
project inherits with ``with read_base(): from mae_mm.configs.<...> import *``.
"""
import os
import os.path as osp
import platform
import shutil
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = osp.dirname(osp.abspath(__file__))


def read_version() -> str:
    namespace: dict = {}
    with open(osp.join(ROOT, 'mae_mm', 'version.py'), encoding='utf-8') as f:
        exec(compile(f.read(), 'version.py', 'exec'), namespace)
    return namespace['__version__']


def parse_requirements(fname: str) -> list:
    """Requirement lines of ``requirements/<fname>``, comments and blanks dropped."""
    with open(osp.join(ROOT, 'requirements', fname), encoding='utf-8') as f:
        lines = (line.split('#', 1)[0].strip() for line in f)
        return [line for line in lines if line]


def add_mim_extension() -> None:
    """Copy (or link, for editable installs) configs/tools/projects/model-index into
    ``mae_mm/.mim``."""
    if 'develop' in sys.argv or 'editable_wheel' in sys.argv:
        mode = 'symlink' if platform.system() != 'Windows' else 'copy'
    elif {'sdist', 'bdist_wheel', 'build', 'build_py'} & set(sys.argv):
        mode = 'copy'
    else:
        return
    mim_path = osp.join(ROOT, 'mae_mm', '.mim')
    os.makedirs(mim_path, exist_ok=True)
    for name in ('configs', 'tools', 'projects', 'model-index.yml'):
        src = osp.join(ROOT, name)
        dst = osp.join(mim_path, name)
        if not osp.exists(src):
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_path), dst)
        elif osp.isdir(src):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            shutil.copyfile(src, dst)


class OptionalBuildExt(build_ext):
    """Build the JPEG region decoder when libjpeg(-turbo) headers are there; without them
    mae-mm installs anyway and FastRandomResizedCrop takes its (slower, same-pixel) fallback.

    A failed build is not hidden: :meth:`report_failure` prints a warning block to stderr,
    naming the package to install. pip shows a successful build's output only with ``-v``
    (``pip install -v -e .``); mae-mm also logs the same advice once at run time, when the
    first FastRandomResizedCrop is built without the extension."""

    def run(self):
        try:
            super().run()
        except Exception as err:  # compiler or headers missing
            self.report_failure('the JPEG region decoder', err)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as err:
            self.report_failure(ext.name, err)

    @staticmethod
    def failure_message(what: str, err: BaseException) -> str:
        rule = '=' * 78
        detail = ' '.join(str(err).split()) or type(err).__name__
        return '\n'.join([
            rule,
            f'WARNING: mae-mm: {what} was NOT built ({type(err).__name__}: {detail}).',
            'mae-mm installs and works without it: FastRandomResizedCrop then decodes each',
            'image whole (OpenCV) before cropping: same pixels, slower decoding (most on',
            'photos much larger than the crop; docs/benchmarks.md).',
            'To build it, install the libjpeg-turbo headers and a C compiler, then reinstall:',
            '  Debian:  apt-get install libjpeg62-turbo-dev    Ubuntu: libjpeg-turbo8-dev',
            '  conda:   conda install libjpeg-turbo             Fedora: libjpeg-turbo-devel',
            '  then:    pip install -e .   (or pip install . ) in the mae-mm checkout',
            rule,
        ])

    def report_failure(self, what: str, err: BaseException) -> None:
        print(self.failure_message(what, err), file=sys.stderr, flush=True)


CROP_DECODE = Extension(
    'mae_mm.datasets.transforms._crop_decode',
    sources=['mae_mm/datasets/transforms/_crop_decode.c'],
    libraries=['jpeg'],
    extra_compile_args=['-O2'],
)


if __name__ == '__main__':
    add_mim_extension()
    setup(
        name='mae-mm',
        version=read_version(),
        description='Masked Autoencoders (MAE) as an OpenMMLab plugin: pretraining, '
        'evaluation protocols and transfer to mmdet/mmseg',
        long_description=open(osp.join(ROOT, 'README.md'), encoding='utf-8').read(),
        long_description_content_type='text/markdown',
        keywords='computer vision, self-supervised learning, masked autoencoder, openmmlab',
        packages=find_packages(exclude=('configs', 'tools', 'tests', 'tests.*', 'projects',
                                        'projects.*', 'docs')),
        include_package_data=True,
        # Tested: 3.9 (oldest stack), 3.11 (pinned stack), 3.12 (newest torch); README, "Supported
        # environments".
        python_requires='>=3.9,<3.13',
        license='Apache License 2.0',
        install_requires=parse_requirements('runtime.txt'),
        extras_require={
            'mim': parse_requirements('mminstall.txt'),
            'optional': parse_requirements('optional.txt'),
            'tests': parse_requirements('tests.txt'),
            'all': parse_requirements('optional.txt') + parse_requirements('tests.txt'),
        },
        ext_modules=[CROP_DECODE],
        cmdclass={'build_ext': OptionalBuildExt},
        zip_safe=False,
    )
