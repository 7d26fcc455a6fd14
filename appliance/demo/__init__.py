"""`fluxbox demo` and what it is made of, also used by the tests and benchmarks.

- ``run``: a self-contained run on this machine: modality, box, PACS and a flaky link.
- ``relay``: a TCP relay that cuts and slows the link on command.
- ``synthetic``: synthetic CT, MG and multi-frame studies.
"""
