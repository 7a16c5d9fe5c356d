"""``build_image``: bundle-vol's image file, made by one of the two builders.

The builders are :mod:`amibundle.volume.loop` (root and a loop device, like
the classic tool) and :mod:`amibundle.volume.rootless` (no root, no loop
device, no mount). Both copy with the same copier and fill the image the
same way (:mod:`amibundle.volume.fill`).

Either way a partitioned image gets its boot code last, written into the
finished file by :func:`amibundle.volume.boot.finish_disk` (no loop device).

Every resource (loop device, mount, staging tree, partial image) is released
in reverse order on any failure or Ctrl-C; the image appears under its final
name only when complete.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from amibundle.files import refuse_existing, temp_output
from amibundle.volume.boot import finish_disk, read_table
from amibundle.volume.loop import build_with_loop
from amibundle.volume.plan import (
    Builder,
    BuildJob,
    BuildResult,
    ImageSpec,
    MiB,
    Notify,
    prepare_image,
)
from amibundle.volume.rootless import build_rootless
from amibundle.volume.rules import CopyRules, measure, walk

__all__ = ["build_image"]


def build_image(
    volume: Path,
    rules: CopyRules,
    spec: ImageSpec,
    *,
    builder: Builder,
    notify: Notify,
) -> BuildResult:
    """Builds ``spec.path`` from ``volume`` with ``builder``; returns what was made."""
    started = time.monotonic()
    refuse_existing([spec.path], force=spec.force, what="the image file")
    totals = measure(walk(volume, rules))
    notify(
        f"{totals.entries} entries to copy, {totals.data_bytes / MiB:.1f} MiB of data "
        f"({totals.hard_links} hard links)"
    )
    build = build_with_loop if builder is Builder.LOOP else build_rootless
    with temp_output(spec.path, keep_on_failure=spec.keep_partial) as partial:
        partial.close()  # the builders write the file by its name
        layout = prepare_image(partial.path, spec, totals, notify)
        table = read_table(partial.path) if spec.boot is not None else None
        job = BuildJob(volume, rules, spec, layout, partial.path, totals, table, notify)
        # Loop devices, mounts and the staging tree go as soon as the image is
        # complete, and in reverse order after any failure or Ctrl-C.
        with contextlib.ExitStack() as resources:
            copied = build(job, resources)
        if spec.boot is not None and table is not None:
            if spec.boot.modules is not None:
                notify(f"Writing GRUB ({spec.boot.mode.value}) into {spec.path.name} ...")
            finish_disk(partial.path, spec.boot, table)
        partial.publish(overwrite=spec.force, mode=None)
    return BuildResult(
        image_path=spec.path,
        builder=builder,
        fs_type=spec.fs_type,
        label=spec.label,
        uuid=spec.uuid,
        partition=layout.partition,
        boot_mode=spec.boot_mode,
        image_size=layout.image_size,
        entries=copied.entries,
        data_bytes=totals.data_bytes,
        fixups=len(copied.fixups),
        seconds=time.monotonic() - started,
    )
