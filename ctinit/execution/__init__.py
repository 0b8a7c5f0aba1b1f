"""How a step runs, and the measured choice among the ways: shared by meta-training (``ctinit.meta``) and
fine-tuning (``ctinit.finetune``). Plain torch, below ``meta/``; the one place here that opens files is the
per-machine record of what was measured (``compiled.read_record``/``write_record``, beside torch's compile cache;
``compiled.cpu_model`` reads the CPU's name).

- ``choices.py``: the execution (``sequential``/``batched``) and compile (``off``/``graphs``/``inductor``/
  ``backbone``/``auto``) settings checked and resolved, as pure functions of the setting;
- ``batched.py``: T same-shape tasks' forward/backward as one program on stacked parameters;
- ``device_step.py``: a global step kept on the device (masked task updates, CUDA-graph capture);
- ``compiled.py``: ``compile: backbone`` and ``compile: auto`` (``AutoCompile``), the per-machine records;
- ``channels_last.py``: ``channels_last: auto`` (``AutoChannelsLast``), measured per run;
- ``cores.py``: how many CPU cores are free now; ``orphans.py``: worker processes that stop with their parent;
- ``precision.py``: ``mixed_precision: auto`` (``AutoPrecision``): bf16 compute where the CPU has it and a measured
  trial shows it faster.

The precision settings and the default live here, without torch, so that the command-line parsers can name them
before torch is imported.
"""

PRECISIONS = ("no", "bf16", "fp16", "auto")
#: What a run gets when it does not set ``mixed_precision`` (see ``precision.py``'s docstring for when this changes).
DEFAULT_PRECISION = "auto"
