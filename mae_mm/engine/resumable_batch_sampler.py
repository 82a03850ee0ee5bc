"""A batch-sampler wrapper that knows each batch's position in the training stream."""
from typing import Callable, Iterator, List


class ResumableBatchSampler:
    """Wraps a DataLoader's batch sampler for exact resumption.

    - ``skip_next`` batches are dropped from the start of the next pass *as index lists*, without
      loading a single image: a run resumed in the middle of an epoch continues with the batch
      after the last one it trained on.
    - ``on_batch(position)`` is called with the batch's position in the whole training stream
      (0, 1, 2, ... across epochs) just before the batch's samples are loaded, so that the random
      state of the data pipeline can be set from the position alone.

    Every other attribute (``sampler``, ``batch_size``, ``drop_last``...) is the wrapped one's.

    Args:
        batch_sampler: The DataLoader's batch sampler (an iterable of index lists with a length).
        on_batch (Callable[[int], None]): Called before each batch is loaded.
        start_position (int): Stream position of the first batch of the next pass.
    """

    def __init__(self, batch_sampler, on_batch: Callable[[int], None],
                 start_position: int = 0) -> None:
        self.batch_sampler = batch_sampler
        self.on_batch = on_batch
        self.position = start_position
        self.skip_next = 0

    def __iter__(self) -> Iterator[List[int]]:
        skip, self.skip_next = self.skip_next, 0
        for index, indices in enumerate(self.batch_sampler):
            position = self.position
            self.position += 1
            if index < skip:
                continue
            self.on_batch(position)
            yield indices

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __getattr__(self, name: str):
        if name == 'batch_sampler':  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.batch_sampler, name)
