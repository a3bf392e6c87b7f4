"""Lightning callbacks of lit_rl: evaluation over state subspaces, run summaries, progress."""

from callbacks.checkpointing import CheckpointedMetrics, ResumableModelCheckpoint
from callbacks.frame_progress import FrameProgressBar
from callbacks.logistic_trace import LogisticActorTrace
from callbacks.preemption import Preemption
from callbacks.rank_faults import RankFaults
from callbacks.run_summary import RunSummary
from callbacks.subspace_evaluation import SubspaceEvaluation
from callbacks.throughput import Throughput

__all__ = [
    "CheckpointedMetrics",
    "FrameProgressBar",
    "LogisticActorTrace",
    "Preemption",
    "RankFaults",
    "ResumableModelCheckpoint",
    "RunSummary",
    "SubspaceEvaluation",
    "Throughput",
]
