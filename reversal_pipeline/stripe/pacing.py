"""How the Stripe resource paces against the account's limit: its headroom and its 429 answer.

Kept apart from ``resource.py`` because these figures are tuned against
measurements (benchmarks/RESULTS.md, figures 1 and 6), not against the SDK.
"""

from __future__ import annotations

from reversal_pipeline.stripe.rate_limit import Penalty

# Pacing against a server that counts requests in a sliding second: sending at
# exactly the budget means any arrival jitter (GIL hand-offs, the network, the
# server's own timers) puts budget + 1 requests in some second and draws a 429.
# At 98% a request must arrive ~20 ms later than the one `budget` places behind
# it before the window overflows (benchmarks/RESULTS.md, "Figures once kept in code
# comments"). 97% capped figure 1 at 97/s, below its 95/s goal once the run's own
# start and its 429s were paid; 98% drew 30-37 429s per 10,000 calls where 97% drew
# 22-28 (benchmarks/RESULTS.md, "Figure 1 met: 98 % pacing").
PACING_HEADROOM = 0.98
# A process behind its booked slots (a thread that woke late) catches up at 99% of
# the budget: at 100% the catch-up itself filled the sliding second, and figure 6's
# lone run drew 6-7 429s in 20 s where at 99% it drew 1 (benchmarks/RESULTS.md).
CATCH_UP_TO = 0.99
# After a 429: pause everyone for a moment, slow down by a tenth, regain the full
# rate within about a second (additive increase, multiplicative decrease).
# Repeated 429s still compound down to the floor (10% of the budget), so a budget
# shared with other traffic backs off. A lone 429 (none in the second before it)
# is arrival jitter against a sliding-second limit the account is not over: it
# pauses 20 ms and slows by 3%, regained in 0.3 s (on figure 1 the gain was within
# one run's noise; the measured alternatives are in benchmarks/RESULTS.md).
PENALTY: Penalty = {
    "pause_seconds": 0.05,
    "decrease_factor": 0.9,
    "recovery_per_second": 0.1,
    "lone_pause_seconds": 0.02,
    "lone_decrease_factor": 0.97,
    "repeat_within_seconds": 1.0,
}
