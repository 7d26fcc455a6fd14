"""The worklist: a cache of each site's orders, served to the modality.

- ``config``: the ``[site.worklist]`` settings and their checks.
- ``sync``: the one broad C-FIND that pulls a site's orders.
- ``corrections``: the site's rules applied to every entry at sync.
- ``charset``: entries kept in UTF-8, answered in the character set a query asks for.
- ``entries``: a cached entry as the store keeps it, and as JSON.
- ``matching``: which entries answer a query (PS3.4 C.2.2.2).
- ``cache``: the sync worker and the C-FIND SCP over the store's cache.
"""
