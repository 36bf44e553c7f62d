"""Datasets out of the database, in the forms trainers read: ``rlaif export``.

``export_dataset`` writes one dataset (sft, prefs, kto, rm) in one format (``trl`` for TRL's trainers, ``raw`` with
lineage) to a Parquet file, a JSON Lines file or a ``save_to_disk`` folder, with a dataset card (README.md) beside
it; ``push_to_hub`` uploads both. docs/export.md shows each format's first row.
"""

from __future__ import annotations

from pathlib import Path

from rlaif.exports.formats import DATASETS, FORMATS, Export, Filters, validate, write_export
from rlaif.exports.hub import push_to_hub

__all__ = ["DATASETS", "FORMATS", "Export", "Filters", "export_dataset", "push_to_hub"]


def export_dataset(db: str | Path, dataset: str, out: str | Path, *, fmt: str = "trl", filters: Filters = Filters(),
                   command: str | None = None, license: str = "other", card: bool = True) -> Export:
    """Write ``dataset`` in ``fmt`` to ``out`` and, with ``card``, its dataset card into the same folder.

    ``command`` is what the card says made it (the CLI passes its own command line).
    """
    import duckdb

    from rlaif.errors import StoreError
    from rlaif.exports import card as cards
    from rlaif.store import Store, error_line

    out = Path(out)
    validate(dataset, fmt, out, filters)  # before the card's check, so a typo is named first
    if card:
        cards.check_card_target(out if out.is_dir() else out.parent)
    export = write_export(db, dataset, fmt, out, filters)
    if card:
        try:
            with Store(db).connect(read_only=True) as con:
                facts = cards.gather(con, export, filters)
        except duckdb.Error as exc:
            raise StoreError(f"wrote {export.path}, but cannot read its dataset card's figures: {error_line(exc)}") \
                from None
        made_by = command or f"rlaif.exports.export_dataset(db, {dataset!r}, {str(out)!r}, fmt={fmt!r})"
        cards.write_card(export.folder, cards.render(export, facts, command=made_by, license=license))
    return export
