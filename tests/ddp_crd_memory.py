"""Run under torchrun by tests/test_distributed.py: one CRD-i step through DDP on this rank's shard;
each rank saves its memory bank."""
import sys
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP
from isokd.core import dist_info
from test_distributed import crd_step_inputs

dist.init_process_group('gloo')
rank, world = dist_info()
distiller, x, target, index = crd_step_inputs()
step = DDP(distiller, broadcast_buffers=False)
out = step(x[rank::world], target[rank::world], index[rank::world])
sum(out.losses.values()).backward()
mem = distiller.crd.memory
torch.save(dict(memory_s=mem.memory_s, memory_t=mem.memory_t, Z=mem.Z), f'{sys.argv[1]}.{rank}')
# DDP holds the process group: free it first, or gloo's threads may outlive the interpreter (SIGABRT at exit)
del step
dist.destroy_process_group()
