"""Operator-level profile of eager and compiled CTS steps (8 tasks, batch 32)."""
import sys, json, copy, torch
sys.path.insert(0, '/work/wt/h3')
sys.path.insert(0, '/work/wt/h3/benchmarks')
import throughput as tp
from torch.profiler import profile, ProfilerActivity
out = {}
torch.set_num_threads(1)
for arch, size in tp.CPU_MODE_BACKBONES:
    torch.manual_seed(0)
    bb = tp.build_backbone(arch, size)
    heads = [tp.TaskHead(bb.feature_dim, tp.CLASSES[t]) for t in range(8)]
    data = tp.make_data(8, size, 256, torch.device('cpu'))
    for mode in ("off",):
        e = tp.Engine(bb, heads, tp.samplers(data, 32), "no", torch.device('cpu'), execution="sequential", compile=mode)
        for _ in range(3): e.step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3): e.step()
        ev = prof.key_averages()
        total = sum(x.self_cpu_time_total for x in ev)
        rows = sorted(((x.key, x.self_cpu_time_total) for x in ev), key=lambda r: -r[1])
        conv = sum(t for k, t in rows if 'conv' in k.lower() and 'backward' not in k.lower() or 'convolution_backward' in k.lower() or 'mkldnn_convolution' in k.lower())
        share = lambda pred: sum(t for k, t in rows if pred(k.lower())) / total
        out[f"{arch}/{mode}"] = {
            "self_cpu_ms_per_step": total / 3 / 1e3,
            "top": [(k, round(t / total, 4)) for k, t in rows[:15]],
            "convolution_share": share(lambda k: 'convolution' in k or 'conv2d' in k),
            "batch_norm_share": share(lambda k: 'batch_norm' in k),
            "compiled_kernels_share": share(lambda k: 'compiled' in k or 'inductor' in k or 'cpp_fused' in k or 'graph_' in k),
        }
        print(arch, mode, json.dumps(out[f"{arch}/{mode}"], indent=0)[:1500], flush=True)
json.dump(out, open('/tmp/h3x/profile.json', 'w'), indent=1)
