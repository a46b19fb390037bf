"""Cell types are Twisted plugins providing ``spinrt.cells.base.ICellType``.

Add-on packages extend this package by shipping a ``spinrt/plugins/NAME.py``
module of their own; ``pluginPackagePaths`` makes every such directory on
``sys.path`` part of this package.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))
__all__: list[str] = []
