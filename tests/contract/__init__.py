"""Contract tests: one test class per core interface, run against every implementation
(the real hardware adapter fed by a real service, and the fake the core's tests use)."""
