"""The compiled region decoder on truncated and corrupt JPEGs, from several threads at once.

Each input either decodes (libjpeg only warns about corrupt entropy data, as OpenCV's decoder
does) or raises one ``ValueError`` line; nothing crashes, whichever thread meets the error. The
decoder releases the GIL while it reads rows: an error there must be reported only after the GIL
is taken back (``_crop_decode.c``, ``read_region_rows``).
"""
import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from mae_mm.datasets.transforms import crop_decode

pytestmark = pytest.mark.skipif(not crop_decode.available(),
                                reason='the JPEG region decoder is not built')
BOX = (10, 100, 200, 220)


def _corrupt_variants(seed: int = 0, per_kind: int = 40):
    """Truncations, overwritten bytes and inserted markers after the first SOS, for a baseline
    and a progressive JPEG (the latter reads its later scans in jpeg_start_decompress, the
    former its rows while the GIL is released)."""
    from skimage import data as skdata
    photo = np.asarray(Image.fromarray(skdata.chelsea()).resize((301, 227)))
    rng = np.random.default_rng(seed)
    variants = []
    for progressive in (False, True):
        buf = io.BytesIO()
        Image.fromarray(photo).save(buf, format='JPEG', quality=90, progressive=progressive)
        base = buf.getvalue()
        sos = base.find(b'\xff\xda')
        for _ in range(per_kind):
            variants.append(base[:int(rng.integers(sos, len(base)))])
            data = bytearray(base)
            for _ in range(8):
                data[int(rng.integers(sos + 12, len(data)))] = int(rng.integers(0, 256))
            variants.append(bytes(data))
            at = int(rng.integers(sos + 12, len(base) - 2))
            marker = bytes([0xff, int(rng.integers(0xc0, 0xff)), 0x00, 0x02])
            variants.append(base[:at] + marker + base[at:])
    return variants


def _decode(data: bytes):
    try:
        region = crop_decode.decode_region(data, BOX)
    except ValueError as err:
        return 'error', str(err)
    return 'ok', region.shape


def test_corrupt_jpegs_decode_or_raise_one_line_from_many_threads():
    variants = _corrupt_variants()
    serial = [_decode(d) for d in variants]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):  # the same inputs, interleaved differently, give the same outcomes
            assert list(pool.map(_decode, variants)) == serial
    kinds = [kind for kind, _ in serial]
    assert 'ok' in kinds and 'error' in kinds  # both outcomes are exercised
    height, width = BOX[3] - BOX[1], BOX[2] - BOX[0]
    for kind, detail in serial:
        if kind == 'ok':
            assert detail == (height, width, 3)
        else:
            assert detail.startswith('not a decodable JPEG: ') and '\n' not in detail
