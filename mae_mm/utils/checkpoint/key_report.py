"""Which checkpoint keys a model misses, does not expect or has in another shape, grouped
into short readable ranges (``blocks.{0..11}.attn.qkv.{bias,weight}``)."""
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch


class PretrainedKeyMismatchError(ValueError):
    """A ``Pretrained`` init_cfg checkpoint whose keys do not fit the backbone."""


@dataclass
class KeyMismatch:
    """Keys of a model against keys of a checkpoint (see :func:`split_key_mismatch`)."""
    matched: List[str]
    missing: List[str]
    expected_missing: List[str]
    unexpected: List[str]
    expected_unexpected: List[str]
    shape_mismatch: List[Tuple[str, tuple, tuple]]

    @property
    def ok(self) -> bool:
        """No missing, unexpected or mis-shaped key beyond the expected ones."""
        return not (self.missing or self.unexpected or self.shape_mismatch)

    def summary(self, limit: int = 6) -> str:
        """The keys that do not fit, grouped, on one line (for one-line errors), e.g.
        ``25 model keys missing (blocks.{4-5}.attn.qkv.{bias,weight}, ...); 1 key of another
        shape (patch_embed.proj.weight [64, 3, 8, 8] vs model [64, 3, 4, 4])``."""
        def groups(keys: List[str]) -> str:
            grouped = group_keys(keys)
            more = f', ... {len(grouped) - limit} more' if len(grouped) > limit else ''
            return ', '.join(grouped[:limit]) + more

        def count(n: int, what: str) -> str:
            return f'{n} {what}{"s" if n != 1 else ""}'

        parts = []
        if self.missing:
            parts.append(f'{count(len(self.missing), "model key")} missing '
                         f'({groups(self.missing)})')
        if self.unexpected:
            parts.append(f'{count(len(self.unexpected), "unexpected key")} '
                         f'({groups(self.unexpected)})')
        if self.shape_mismatch:
            shown = ', '.join(f'{k} {list(c)} vs model {list(m)}'
                              for k, m, c in self.shape_mismatch[:4])
            parts.append(f'{count(len(self.shape_mismatch), "key")} of another shape ({shown})')
        return '; '.join(parts)

    def report(self, title: str = 'checkpoint') -> str:
        """Readable lines; keys differing only in block index are grouped (``blocks.{0-11}``)."""
        total = len(self.matched) + len(self.missing) + len(self.expected_missing) \
            + len(self.shape_mismatch)
        lines = [f'{title}: {len(self.matched)} of {total} model keys loaded']
        sections = (
            (self.missing, 'MISSING in the checkpoint (left as initialised)'),
            (self.expected_missing, 'expected missing (not in this checkpoint format, fine)'),
            (self.unexpected, 'UNEXPECTED in the checkpoint (ignored)'),
            (self.expected_unexpected, 'expected unexpected (ignored, fine)'),
        )
        for keys, header in sections:
            if keys:
                lines.append(f'{header}: {len(keys)} key{"s" if len(keys) != 1 else ""}')
                lines += [f'  {k}' for k in group_keys(keys)]
        if self.shape_mismatch:
            lines.append(f'SHAPE MISMATCH (not loaded): {len(self.shape_mismatch)} keys')
            lines += [f'  {k}: model {list(m)} vs checkpoint {list(c)}'
                      for k, m, c in self.shape_mismatch]
        if self.ok:
            lines.append('no missing or unexpected keys'
                         + (' beyond the expected ones'
                            if self.expected_missing or self.expected_unexpected else ''))
        return '\n'.join(lines)


def _shape(value: Any) -> Optional[tuple]:
    if isinstance(value, torch.Tensor):
        return tuple(value.shape)
    if isinstance(value, (tuple, list, torch.Size)) and all(isinstance(v, int) for v in value):
        return tuple(value)
    return None


def _matches_any(key: str, patterns: Sequence[str]) -> bool:
    return any(re.search(p, key) for p in patterns)


def split_key_mismatch(model_keys: Union[Iterable[str], Mapping],
                       ckpt_keys: Union[Iterable[str], Mapping],
                       expected_missing_patterns: Sequence[str] = (),
                       expected_unexpected_patterns: Sequence[str] = ()) -> KeyMismatch:
    """Sort keys into matched / missing / unexpected, separating the expected ones.

    Args:
        model_keys: The model's keys, or its state dict (key -> tensor or shape) to compare
            shapes too.
        ckpt_keys: The checkpoint's keys, or its state dict.
        expected_missing_patterns (Sequence[str]): Regular expressions (``re.search``) of keys
            that a model may lack in the checkpoint without it being an error, e.g.
            ``r'rel_pos'``, ``r'relative_position_bias_table$'``.
        expected_unexpected_patterns (Sequence[str]): Same for checkpoint keys the model does not
            use, e.g. ``r'^decoder_'``.

    Returns:
        KeyMismatch: Lists in the model's (resp. checkpoint's) order.
    """
    model_list, ckpt_list = list(model_keys), list(ckpt_keys)
    model_set, ckpt_set = set(model_list), set(ckpt_list)
    matched, missing, exp_missing, shape_mismatch = [], [], [], []
    for key in model_list:
        if key in ckpt_set:
            m_shape = _shape(model_keys[key]) if isinstance(model_keys, Mapping) else None
            c_shape = _shape(ckpt_keys[key]) if isinstance(ckpt_keys, Mapping) else None
            if m_shape is not None and c_shape is not None and m_shape != c_shape:
                shape_mismatch.append((key, m_shape, c_shape))
            else:
                matched.append(key)
        elif _matches_any(key, expected_missing_patterns):
            exp_missing.append(key)
        else:
            missing.append(key)
    unexpected, exp_unexpected = [], []
    for key in ckpt_list:
        if key not in model_set:
            (exp_unexpected if _matches_any(key, expected_unexpected_patterns)
             else unexpected).append(key)
    return KeyMismatch(matched, missing, exp_missing, unexpected, exp_unexpected, shape_mismatch)


def report_key_mismatch(model_keys: Union[Iterable[str], Mapping],
                        ckpt_keys: Union[Iterable[str], Mapping],
                        expected_missing_patterns: Sequence[str] = (),
                        expected_unexpected_patterns: Sequence[str] = (),
                        title: str = 'checkpoint') -> str:
    """A readable report of the keys a model and a checkpoint do not share.

    Expected-missing keys (e.g. relative-position tables, which MAE checkpoints never have) are
    listed in their own section, not as errors. See :func:`split_key_mismatch` for the arguments;
    ``title`` starts the first line.

    Returns:
        str: Several lines, e.g.::

            checkpoint: 26 of 30 model keys loaded
            expected missing (not in this checkpoint format, fine): 4 keys
              blocks.{0-1}.attn.{rel_pos_h,rel_pos_w}
            UNEXPECTED in the checkpoint (ignored): 2 keys
              head.{bias,weight}
    """
    return split_key_mismatch(model_keys, ckpt_keys, expected_missing_patterns,
                              expected_unexpected_patterns).report(title)


# ------------------------------------------------------------------------------------------------
# Grouping keys for reports
# ------------------------------------------------------------------------------------------------
def _ranges(values: Iterable[int]) -> str:
    values = sorted(set(values))
    parts, start, prev = [], values[0], values[0]
    for v in values[1:] + [None]:
        if v is not None and v == prev + 1:
            prev = v
            continue
        parts.append(str(start) if start == prev else f'{start}-{prev}')
        if v is not None:
            start = prev = v
    return parts[0] if len(parts) == 1 and '-' not in parts[0] else '{' + ','.join(parts) + '}'


def _template(key: str) -> Tuple[str, Tuple[int, ...], str]:
    parts = key.split('.')
    stem, last = parts[:-1], parts[-1]
    nums = tuple(int(p) for p in stem if p.isdigit())
    return '.'.join('#' if p.isdigit() else p for p in stem), nums, last


def _render(template: str, index_sets: List[Tuple[int, ...]]) -> Optional[str]:
    """``template`` with its ``#`` filled; None when the indices are not a full product."""
    if not index_sets or not index_sets[0]:
        return template
    columns = list(zip(*index_sets))
    product = 1
    for col in columns:
        product *= len(set(col))
    if product != len(set(index_sets)):
        return None
    out = template
    for col in columns:
        out = out.replace('#', _ranges(col), 1)
    return out


def group_keys(keys: Iterable[str]) -> List[str]:
    """Compact, exact display of many keys: ``blocks.{0-11}.attn.qkv.{bias,weight}``.

    Args:
        keys (Iterable[str]): Keys.

    Returns:
        list[str]: Lines; every key is covered by exactly one line, and a line stands for exactly
        the keys it expands to.
    """
    keys = list(dict.fromkeys(keys))
    by_template: 'OrderedDict[Tuple[str, str], List[Tuple[int, ...]]]' = OrderedDict()
    for key in keys:
        template, nums, last = _template(key)
        by_template.setdefault((template, last), []).append(nums)
    # merge the last components that share a template and exactly the same indices
    merged: 'OrderedDict[Tuple[str, Tuple], List[str]]' = OrderedDict()
    for (template, last), nums in by_template.items():
        merged.setdefault((template, tuple(sorted(set(nums)))), []).append(last)
    lines = []
    for (template, nums), lasts in merged.items():
        stem = _render(template, list(nums))
        tail = lasts[0] if len(lasts) == 1 else '{' + ','.join(sorted(lasts)) + '}'
        if stem is None:  # not a full product of indices: list the keys one by one
            for n in nums:
                stem_n = template
                for v in n:
                    stem_n = stem_n.replace('#', str(v), 1)
                lines += [f'{stem_n}.{last}' if stem_n else last for last in sorted(lasts)]
        else:
            lines.append(f'{stem}.{tail}' if stem else tail)
    return lines


def _first_index_template(key: str) -> Tuple[str, Optional[int]]:
    parts = key.split('.')
    for i, part in enumerate(parts):
        if part.isdigit():
            return '.'.join(parts[:i] + ['#'] + parts[i + 1:]), int(part)
    return key, None


def _group_pairs(pairs: List[Tuple[str, str]]) -> List[Tuple[str, str]]:
    """Group renames that differ only in their (shared) block index, then weight/bias."""
    groups: 'OrderedDict[Tuple[str, str], List[Optional[int]]]' = OrderedDict()
    for src, dst in pairs:
        s_t, s_i = _first_index_template(src)
        d_t, d_i = _first_index_template(dst)
        if s_i is None or s_i != d_i:
            groups.setdefault((src, dst), []).append(None)
        else:
            groups.setdefault((s_t, d_t), []).append(s_i)
    out = []
    for (s_t, d_t), indices in groups.items():
        if indices[0] is None:
            out.append((s_t, d_t))
        else:
            r = _ranges(indices)
            out.append((s_t.replace('#', r, 1), d_t.replace('#', r, 1)))
    merged: 'OrderedDict[Tuple[str, str], List[Tuple[str, str]]]' = OrderedDict()
    for s, d in out:
        s_stem, _, s_last = s.rpartition('.')
        d_stem, _, d_last = d.rpartition('.')
        merged.setdefault((s_stem, d_stem), []).append((s_last, d_last))
    lines = []
    for (s_stem, d_stem), lasts in merged.items():
        if len(lasts) > 1 and all(a == b for a, b in lasts):
            tail = '{' + ','.join(sorted(a for a, _ in lasts)) + '}'
            lasts = [(tail, tail)]
        lines += [(f'{s_stem}.{a}' if s_stem else a, f'{d_stem}.{b}' if d_stem else b)
                  for a, b in lasts]
    return lines


def _duplicates(items: List[str]) -> List[str]:
    seen, dup = set(), []
    for item in items:
        if item in seen:
            dup.append(item)
        seen.add(item)
    return dup
