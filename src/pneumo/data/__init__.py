"""Data: find images (layout), decode (io), split (split), cache (cache), batch (loader, augment).

Import from the submodules, e.g. `from pneumo.data.layout import discover`.
"""
