"""In-memory stand-ins for the stores behind the refresh use case's ports (worker/usecase/ports.py).

Each answers as its Redis store does (a contract test in tests/integration/test_*_contract.py
runs the same scenarios against both), keeps its state in dicts, and reads time from the clock
it is given, so a unit test drives leases, waiting lines and deadlines by moving a fake clock.

    MemorySlots          worker/stores/slots.py: ProviderSlots   (leases, the fair waiting line)
    MemoryCoalescer      worker/stores/coalesce.py: Coalescer    (leaders, followers)
    MemoryBulkChildren   worker/stores/bulk_store.py: BulkStore  (a bulk as its children see it)
    MemoryWatch          worker/stores/request_watch.py: RequestWatch (deadlines of live requests)
    NoFences             worker/stores/fence.py: no snapshot, every attempt lock granted
    MemoryRedistributionMarks worker/stores/redistribution_marks.py (one RefreshNow per window)
"""

from testing.standins.bulk_children import MemoryBulkChildren
from testing.standins.coalescer import MemoryCoalescer
from testing.standins.fences import NoFences
from testing.standins.redistribution_marks import MemoryRedistributionMarks
from testing.standins.slots import MemorySlots
from testing.standins.watch import MemoryWatch

__all__ = [
    "MemoryBulkChildren",
    "MemoryCoalescer",
    "MemoryRedistributionMarks",
    "MemorySlots",
    "MemoryWatch",
    "NoFences",
]
