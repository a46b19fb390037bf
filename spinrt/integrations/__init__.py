"""Integration cell types and the plumbing they share.

An integration is one module here (``prometheus.py``, ``kubernetes.py``,
``grafana.py``) holding an :class:`~spinrt.integrations.base.Integration`:
one object that is both a cell type (``ICellType``) and a connection type
(``IConnectionType``) of the same name. A one-line module in
``spinrt/plugins/`` exposes it, so the runtime finds it with
``getPlugins(...)`` exactly as it finds a user's add-on.

The shared plumbing:

- :mod:`.base`: the interfaces, the schema of a connection type's fields,
  and ``Integration`` (the base class a new integration subclasses);
- :mod:`.connections`: the stored typed connections (``connections.set``
  and friends, PROTOCOL.md section 13), references to secrets, defaults;
- :mod:`.http`: one connection's HTTP API through the runtime's outbound
  TLS policy (or the connection's own CA), with errors named by status and
  the server's own message;
- :mod:`.tables`, :mod:`.charts`, :mod:`.times`: outputs and time parsing.

docs/integrations.rst tells how to write a new one.
"""
