"""Run-time serving: the tiers behind the router, and what keeps them safe and bounded.

- ``service.py``: :class:`Switchboard` - route, answer on a tier, fall back, stand-ins for unreachable models;
- ``resilience.py``: timeouts, retries with backoff, bounded concurrency and queue, lazy shared start;
- ``circuit.py``: the cooldown circuit of one backend; ``clock.py``: injectable time;
- ``netguard.py``: the server-side-request-forgery guard for endpoints that server admins add.
"""
