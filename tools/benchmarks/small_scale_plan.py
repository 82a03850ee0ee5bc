"""Time-budget planning of the small-scale study: how many iterations each run gets.

The study's runs are grouped in phases (default pretraining; the main fine-tune/scratch and
linear-probe comparison; the ablation pretrainings; the ablation fine-tune/probe runs). Every
run kind has a *share* of the usable budget. Iterations = share x budget / measured seconds per
iteration. Before each phase the remaining shares are re-planned from the time actually left,
so a phase that overran shrinks the later ones instead of blowing the deadline. Within a phase
all runs of one kind get the same schedule, so the comparisons inside it stay like for like.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

# Shares of the usable training time per run, by role (they need not sum to 1: evaluation and
# per-run overhead are estimated separately and subtracted first). The main comparison gets one
# long pretraining; the ablations compare six short ones (the default setting among them) with
# each other, so the default model is pretrained twice.
RUN_SHARES = dict(pretrain_main=0.2, finetune_full=0.03, finetune_10pct=0.018, linear=0.014,
                  pretrain_ablation=0.035, finetune_ablation=0.01, linear_ablation=0.008)
# Which measured speed each role runs at.
SPEED_OF = dict(pretrain_main='pretrain', pretrain_ablation='pretrain',
                finetune_full='finetune', finetune_10pct='finetune',
                finetune_ablation='finetune', linear='linear', linear_ablation='linear')
MIN_ITERS = 2
# Re-planning may stretch a phase at most this much when earlier phases ran faster than planned.
MAX_STRETCH = 1.25
# Ablation variants are dropped (lowest priority first) while the ablation phases would get
# less than this fraction of their planned time: such short runs would measure nothing.
MIN_ABLATION_FRACTION = 0.3


@dataclass
class CostModel:
    """Seconds per iteration of each run kind, updated from the runs as they finish.

    Args:
        seconds_per_iter (dict): speed class ('pretrain', 'finetune', 'linear') -> seconds per
            training iteration (pretraining at the default model; other pretrainings are
            scaled by :func:`pretrain_cost_factor`).
        eval_seconds (float): Seconds of one evaluation on the test set.
        overhead_seconds (float): Seconds of building a Runner and its data sets.
    """
    seconds_per_iter: Dict[str, float]
    eval_seconds: float
    overhead_seconds: float = 5.0

    def update(self, speed: str, seconds: float, iters: int, factor: float = 1.0) -> None:
        """Take the measured speed of a finished run as the new estimate of its class."""
        if iters > 0 and seconds > 0:
            self.seconds_per_iter[speed] = seconds / iters / factor

    def train_seconds(self, role: str, iters: int, factor: float = 1.0) -> float:
        return self.seconds_per_iter[SPEED_OF[role]] * factor * iters

    def run_seconds(self, role: str, iters: int, factor: float = 1.0) -> float:
        """Training + evaluation + overhead of one run."""
        evals = 0.0 if SPEED_OF[role] == 'pretrain' else self.eval_seconds
        return self.train_seconds(role, iters, factor) + evals + self.overhead_seconds


def pretrain_cost_factor(mask_ratio: float, decoder_depth: int, default_mask_ratio: float = 0.75,
                         default_decoder_depth: int = 4, num_patches: int = 64,
                         encoder_layers: int = 4, encoder_width: int = 64,
                         decoder_width: int = 32) -> float:
    """Cost of one pretraining iteration relative to the default model.

    Per token, a Transformer block costs about 12 x width^2 multiply-adds; the encoder sees the
    cls token and the visible patches, the decoder all patches plus the cls token.
    """
    def cost(ratio: float, depth: int) -> float:
        visible = 1 + num_patches - int(num_patches * ratio)
        return (encoder_layers * visible * encoder_width**2 +
                depth * (num_patches + 1) * decoder_width**2)
    return cost(mask_ratio, decoder_depth) / cost(default_mask_ratio, default_decoder_depth)


def iters_for(seconds: float, seconds_per_iter: float) -> int:
    """Iterations that fit in ``seconds`` (at least :data:`MIN_ITERS`)."""
    return max(MIN_ITERS, int(seconds / max(seconds_per_iter, 1e-6)))


@dataclass
class PhaseRun:
    """One planned run: its role (a key of :data:`RUN_SHARES`) and its cost factor."""
    name: str
    role: str
    factor: float = 1.0


@dataclass
class PhasePlan:
    """Iterations per role of one phase and the stretch applied to the planned shares."""
    iters: Dict[str, int]
    stretch: float


def plan_phase(runs: Sequence[PhaseRun], later: Sequence[PhaseRun], usable_seconds: float,
               seconds_left: float, costs: CostModel) -> PhasePlan:
    """Iterations for the runs of this phase, leaving their share of the time to later phases.

    The time left (minus evaluation and overhead of every remaining run) is divided in
    proportion to the shares of the remaining runs: ``stretch`` is that time over the planned
    time (capped at :data:`MAX_STRETCH`), and every role of this phase gets ``stretch`` times
    its share of ``usable_seconds``. All runs of one role in a phase get the same iterations.

    Args:
        runs: The runs of this phase.
        later: The runs of the phases after it (only their time is reserved).
        usable_seconds (float): The study's usable budget, on which the shares are defined.
        seconds_left (float): Time left before the deadline.
        costs (CostModel): Current speed estimates.

    Returns:
        PhasePlan: Iterations per role of this phase and the stretch applied.
    """
    every = list(runs) + list(later)
    flexible = seconds_left - sum(costs.run_seconds(r.role, 0) for r in every)
    # Planned seconds at stretch 1, in units of the runs' own speeds (cost factors included).
    planned = sum(RUN_SHARES[r.role] * usable_seconds * r.factor for r in every)
    stretch = MAX_STRETCH if planned <= 0 else min(MAX_STRETCH, max(0.0, flexible) / planned)
    iters = {}
    for run in runs:
        if run.role not in iters:
            seconds = RUN_SHARES[run.role] * usable_seconds * stretch
            iters[run.role] = iters_for(seconds, costs.seconds_per_iter[SPEED_OF[run.role]])
    return PhasePlan(iters=iters, stretch=stretch)


def fit_ablations(variants: Sequence[str], factors: Dict[str, float], usable_seconds: float,
                  seconds_left: float, costs: CostModel) -> List[str]:
    """The ablation variants (in priority order, the reference first) that fit in the time
    left with at least :data:`MIN_ABLATION_FRACTION` of their planned time; the last ones are
    dropped first, and at least two are kept (a comparison needs two)."""
    kept = list(variants)
    while len(kept) > 2:
        runs = [PhaseRun(v, 'pretrain_ablation', factors[v]) for v in kept]
        runs += [PhaseRun(v, role) for v in kept
                 for role in ('finetune_ablation', 'linear_ablation')]
        if plan_phase(runs, [], usable_seconds, seconds_left, costs).stretch >= \
                MIN_ABLATION_FRACTION:
            break
        kept.pop()
    return kept
