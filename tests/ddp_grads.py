"""Run under torchrun by tests/test_distributed.py: one KD-i step through DDP on this rank's shard;
rank 0 saves the student's gradients."""
import sys
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from isokd.core import dist_info
from test_distributed import kd_i_step_inputs

dist.init_process_group('gloo')
rank, world = dist_info()
distiller, x, target = kd_i_step_inputs()
step = DDP(distiller, broadcast_buffers=False)
out = step(x[rank::world], target[rank::world])     # the shard DeviceLoader gives this rank
sum(out.losses.values()).backward()
if rank == 0:
    torch.save({k: p.grad for k, p in distiller.student.named_parameters()}, sys.argv[1])
# DDP holds the process group: free it first, or gloo's threads may outlive the interpreter (SIGABRT at exit)
del step
dist.destroy_process_group()
