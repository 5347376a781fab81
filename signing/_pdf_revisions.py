"""What the incremental updates after a seal did (ISO 32000-2 §7.5.6), named for a person.

pyHanko's difference analysis accepts some updates that Yinxin's policy does not (metadata, unreferenced
objects, empty updates) and explains refusals with internal object numbers. Here each revision after
the sealed one is either long-term-validation data (a DSS, ETSI EN 319 142-1 §5.4; a document
timestamp, §5.5) or a list of plain-language changes: pages, annotations, form fields, content,
resources, the catalog, metadata.
"""

from __future__ import annotations

import logging
from typing import Any

from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature

__all__ = ["changes_after"]

log = logging.getLogger("yinxin.signing")


# -- what the updates after the seal did ------------------------------------------------------

# More later revisions than any LTV workflow writes (one DSS and a timestamp per renewal).
_MAX_LATER_REVISIONS = 64
_MAX_TREE_NODES = 20_000


def changes_after(sig: EmbeddedPdfSignature) -> list[str]:
    """What the revisions after *sig*'s did, for each one that is not LTV data (empty: all LTV)."""
    reader = sig.reader
    first, total = sig.signed_revision + 1, reader.xrefs.total_revisions
    if total - first > _MAX_LATER_REVISIONS:
        return [f"{total - first} incremental updates were appended"]
    try:
        timestamped = {ts.signed_revision for ts in reader.embedded_timestamp_signatures}
        kinds: dict[str, None] = {}
        for revision in range(first, total):
            old = reader.get_historical_resolver(revision - 1)
            new = reader.get_historical_resolver(revision)
            if revision in timestamped or _dss_entries(new) - _dss_entries(old):
                continue  # a document timestamp or new validation data; pyHanko's diff checks the rest
            kinds.update(dict.fromkeys(_describe_update(reader, old, new)))
        return list(kinds)
    except Exception as exc:  # fail closed: an update we cannot read is not an LTV update
        log.info("updates after a seal could not be analysed: %s", type(exc).__name__)
        raise
        return ["incremental updates were appended that cannot be analysed"]


def _dss_entries(handler: Any) -> set[Any]:
    """The validation data in a revision's Document Security Store (ISO 32000-2 §12.8.4.3)."""
    dss = _get(handler.root, "/DSS")
    if dss is None:
        return set()
    vri = _get(dss, "/VRI")
    entries: set[Any] = (
        {("vri", str(key)) for key in vri} if isinstance(vri, generic.DictionaryObject) else set()
    )
    for key in ("/Certs", "/CRLs", "/OCSPs"):
        entries.update((key, ref) for ref in _array_refs(_raw(dss, key)))
    return entries


def _describe_update(reader: PdfFileReader, old: Any, new: Any) -> list[str]:
    changed = set(new.explicit_refs_in_revision())
    if not changed:
        return ["an empty incremental update was appended"]
    kinds: list[str] = []
    explained: set[Any] = set()
    old_pages, new_pages = _pages(old, explained), _pages(new, explained)
    if [ref for ref, _ in old_pages] != [ref for ref, _ in new_pages]:
        kinds.append("pages were added, removed or replaced")
    old_fields, new_fields = _fields(old, explained), _fields(new, explained)
    added_fields = new_fields.keys() - old_fields.keys()
    if any(new_fields[ref] for ref in added_fields):
        kinds.append("another signature was added")
    if any(not new_fields[ref] for ref in added_fields):
        kinds.append("form fields were added")
    if any(ref in changed for ref in old_fields):
        kinds.append("form fields were filled in or changed")
    form = _ref(_raw(new.root, "/AcroForm"))
    if not kinds and (form in changed or form != _ref(_raw(old.root, "/AcroForm"))):
        kinds.append("the interactive form (/AcroForm) was changed")
    annotations = content = page_changed = False
    for (_, old_page), (new_ref, new_page) in zip(old_pages, new_pages, strict=False):
        old_widgets = _array_refs(_raw(old_page, "/Annots"))  # annotations, field widgets included
        new_widgets = _array_refs(_raw(new_page, "/Annots"))
        new_annots = [r for r in new_widgets if r not in new_fields]
        old_contents = _array_refs(_raw(old_page, "/Contents"))
        new_contents = _array_refs(_raw(new_page, "/Contents"))
        explained.update(new_widgets, new_contents)
        annotations |= [r for r in old_widgets if r not in old_fields] != new_annots
        annotations |= any(r in changed for r in new_annots)
        content |= old_contents != new_contents or any(r in changed for r in new_contents)
        page_changed |= new_ref in changed and old_widgets == new_widgets and old_contents == new_contents
    if annotations:
        kinds.append("annotations were added or changed")
    if content:
        kinds.append("page content was replaced or overlaid")
    if page_changed:
        kinds.append("page properties or resources were changed")
    replaced = {ref for ref in changed if reader.xrefs.get_historical_ref(ref, old.revision) is not None}
    # Writers refresh /Info and the XMP stream (ModDate, Producer) with every update: named only
    # when nothing else changed, so the reason leads with what a reader of the document would see.
    metadata_changed = False
    for handler_old, handler_new, key in (
        (old.trailer_view, new.trailer_view, "/Info"),
        (old.root, new.root, "/Metadata"),
    ):
        ref = _ref(_raw(handler_new, key))
        explained.add(ref)
        metadata_changed |= ref in changed or ref != _ref(_raw(handler_old, key))
    explained.update((new.root_ref, form))
    if replaced - explained:
        kinds.append("objects of the sealed document were replaced")
    if metadata_changed and not kinds:
        kinds.append("the document metadata (/Info or XMP) was changed")
    if new.root_ref in changed and not kinds:
        kinds.append("the document catalog was changed")
    return kinds or ["objects were added to the document"]  # unreferenced, but not LTV data


def _get(dictionary: Any, key: str) -> Any:
    """*dictionary*'s value for *key*, dereferenced; None when absent."""
    if key not in dictionary:  # pyHanko's .get() would not dereference
        return None
    return dictionary[key]


def _raw(dictionary: Any, key: str) -> Any:
    """*dictionary*'s value for *key* without dereferencing it; None when absent."""
    return dictionary.raw_get(key) if key in dictionary else None


def _ref(value: Any) -> Any:
    return value.reference if isinstance(value, generic.IndirectObject) else None


def _array_refs(value: Any) -> list[Any]:
    """The references an array value holds (and the array's own, when it is indirect)."""
    refs = [] if _ref(value) is None else [_ref(value)]
    value = value.get_object() if value is not None else None
    if isinstance(value, generic.ArrayObject):
        refs.extend(r for r in (_ref(value.raw_get(i)) for i in range(len(value))) if r is not None)
    return refs


def _pages(handler: Any, explained: set[Any]) -> list[tuple[Any, Any]]:
    """The page tree's leaves in order, as (reference, page dictionary); nodes go to *explained*."""
    pages: list[tuple[Any, Any]] = []
    stack = [handler.root.raw_get("/Pages")]
    while stack and len(explained) < _MAX_TREE_NODES:
        node_ref = stack.pop()
        node = node_ref.get_object()
        explained.add(_ref(node_ref))
        if _get(node, "/Type") == "/Pages":
            kids = node.raw_get("/Kids")
            kids = kids.get_object()
            stack.extend(kids.raw_get(i) for i in reversed(range(len(kids))))
        else:
            pages.append((_ref(node_ref), node))
    return pages


def _fields(handler: Any, explained: set[Any]) -> dict[Any, bool]:
    """Every form field's reference, mapped to whether it is a signature field."""
    form = _get(handler.root, "/AcroForm")
    fields: dict[Any, bool] = {}
    stack = list(_array_refs(_raw(form, "/Fields"))) if form is not None else []
    while stack and len(fields) < _MAX_TREE_NODES:
        ref = stack.pop()
        if ref in fields:
            continue
        field_dict = ref.get_object()
        if not isinstance(field_dict, generic.DictionaryObject):
            continue
        fields[ref] = _get(field_dict, "/FT") == "/Sig"
        explained.add(ref)
        stack.extend(_array_refs(_raw(field_dict, "/Kids")))
    return fields
