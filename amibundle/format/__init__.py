"""The bundle's two formats, pure: bytes in, records out, and back.

* :mod:`~amibundle.format.manifest`: the manifest's records and constants;
  :mod:`~amibundle.format.manifest_checks` the rules a record keeps;
  :mod:`~amibundle.format.manifest_writer` the byte-exact classic writer;
  :mod:`~amibundle.format.manifest_reader` the hardened reader.
* :mod:`~amibundle.format.tar`: the tar stream's records;
  :mod:`~amibundle.format.tar_writer` (GNU tar, byte for byte) and
  :mod:`~amibundle.format.tar_reader` (one regular file, nothing else).
* :mod:`~amibundle.format.names`: the one rule for names that become files.

Nothing here touches keys, files or the network.
"""
