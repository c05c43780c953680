"""Keep a Django site's users mirrored as Autumn customers."""

__version__ = "0.1.0.dev0"
