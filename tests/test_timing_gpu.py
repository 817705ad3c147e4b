"""GPU only: the timers' structure on real kernels (what they count, not how fast anything is: speeds are
checked by `rocbench selfcheck` on the device)."""
import pytest
import torch

from rocbench.core.harness import kernel_time, timing
from rocbench.core.stats import StoppingRule

pytestmark = [pytest.mark.gpu, pytest.mark.gpu_exclusive,  # times kernels: nothing else on the GPU meanwhile
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")]


def four_kernels():
    x = torch.randn(1 << 16, device="cuda")
    return lambda: (x.mul_(1.0001), x.add_(1.0), x.sub_(1.0), x.div_(1.0001))


def test_kernel_time_splits_calls_at_the_flush_and_counts_their_kernels():
    flusher = kernel_time.Flusher(torch.device("cuda"), 8 << 20)
    measured = kernel_time.kernel_time(four_kernels(), torch.device("cuda"), StoppingRule(fixed=12), flusher)
    assert measured.kernels_per_call == "4" and measured.mode == "graph"
    assert measured.stats.samples + measured.stats.dropped >= 12 and measured.cold.startswith("flush: 16 MiB read")


def test_graph_time_takes_exactly_the_fixed_samples():
    measured = timing.graph_time([four_kernels()], torch.device("cuda"), warmup=1, rule=StoppingRule(fixed=7))
    assert measured.stats.samples + measured.stats.dropped == 7 and measured.calls_per_sample >= 8


def test_an_uncapturable_call_is_timed_eagerly_and_says_so():
    x = torch.randn(1024, device="cuda")

    def syncs():  # .item() synchronizes: not allowed while capturing a graph
        x.add_(1.0)
        return x.sum().item()

    measured = timing.graph_time([syncs], torch.device("cuda"), warmup=1, rule=StoppingRule(fixed=3))
    assert measured.mode == "eager"
