"""Wire the stages and own the lifecycle: sources -> parse -> batcher -> sink.

- :mod:`agent.runner.pipeline`: the stage tasks (read -> parse -> batch -> commit -> ack) and
  the memory budget;
- :mod:`agent.runner.parsing`: a tailed block to its items, one parse result per line (row ids,
  app-log policy);
- :mod:`agent.runner.ops`: probes, sync status, checkpoint prune, rollup, event logging;
- :mod:`agent.runner.lifecycle`: :class:`Runner`, which builds the parts and runs startup,
  signals, drain and shutdown; :mod:`agent.runner.watchdog` ends a shutdown that hangs;
- :mod:`agent.runner.state`: what the parts share.
"""

from agent.runner.lifecycle import Runner
from agent.runner.parsing import ROW_ID_NAMESPACE, reason_class
from agent.runner.state import RunState

__all__ = ["ROW_ID_NAMESPACE", "RunState", "Runner", "reason_class"]
