import torch

# The test models are tiny: one intra-op thread is as fast as two, and much faster when other processes load the
# CPU (two threads of tiny kernels then spin on each other). Subprocess tests set OMP_NUM_THREADS=1 themselves.
torch.set_num_threads(1)
