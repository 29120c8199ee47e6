"""``npvae bench``: one training epoch of each contender, against the BLAS floor and PyTorch.

    run.py          the run, the report and the command line (its docstring describes the contenders)
    epochs.py       the npvae contenders (any registered trainer) and the matmul floor; the data
    torch_twins.py  the same models in PyTorch eager
    compiled_twins.py  the VAE under torch.compile and under jax.jit (optional contenders)
    kernel_profile.py  per-kernel minimum times of a training step (python -m npvae.bench.kernel_profile)
    two_cores.py    the 2-thread VAE epochs of npvae bench --two-cores (BLAS threads; the batch split)
    probes.py       the machine, Numba's compile time, the time to ``npvae train``'s first step
"""

from npvae.bench.epochs import MatmulEpoch, NpvaeEpoch, bench_data  # noqa: F401
from npvae.bench.probes import FIRST_STEP_MARK, blas_info, compile_times, first_step_time, machine_info  # noqa: F401
from npvae.bench.run import add_bench_parser, cmd_bench, epoch_slices, format_report, main, run_bench  # noqa: F401
from npvae.bench.torch_twins import TorchM2Epoch, TorchVAEEpoch, _FlushDenormal  # noqa: F401
