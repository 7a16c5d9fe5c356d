"""bundle-vol: a root volume (or any tree) into an image file, then a bundle.

:mod:`.rules` decides what is copied, :mod:`.plan` sizes and partitions the
image and chooses the builder, :mod:`.build` runs one builder
(:mod:`.rootless` or :mod:`.loop`), both copying with :mod:`.copier` and
filling the image with :mod:`.fill`; :mod:`.imds` reads the instance
metadata to inherit from, and :mod:`.bundle` is ``bundle_volume``.
"""
