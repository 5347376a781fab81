"""What the incremental updates after a seal did (ISO 32000-2 §7.5.6), named for a person.

pyHanko's difference analysis accepts some updates that Yinxin's policy does not (metadata, unreferenced
objects, empty updates) and explains refusals with internal object numbers. Here every revision after
the sealed one is read again: what it may hold is long-term-validation data (a DSS, ETSI EN 319 142-1
§5.4; a document timestamp, §5.5) and nothing else; whatever else it changed is named in plain
language: pages, annotations, form fields, content, fonts, appearances, optional content, the catalog,
metadata.

Shadow attacks (Mainka et al., NDSS 2021) hide or replace what a reader sees by changing one object
the sealed page *uses* rather than the page itself: a font, a form XObject, an appearance stream, the
optional content configuration, the trailer's /Root. So a replaced object is named by the role it had
in the sealed document (see :func:`_roles`), and the checks run on the revisions that also carry LTV
data, where an attacker would hide such a change. Bytes after the last revision that no revision
accounts for (the "incremental saving attack" without an xref section, Mladenov et al., NDSS 2019)
are a change too.
"""

from __future__ import annotations

import io
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
_MAX_NAMED = 4
# What a long-term-validation revision may change in the catalog: the DSS, and what pyHanko's
# writer refreshes beside it (ISO 32000-2 extension declarations, the version, the XMP stream).
_LTV_CATALOG_KEYS = frozenset({"/DSS", "/Extensions", "/Version", "/Metadata"})
# Catalog entries whose change is named elsewhere.
_EXPLAINED_CATALOG_KEYS = frozenset({"/Pages", "/AcroForm", "/OCProperties", "/Metadata"})
# The role an object has by the key it is reached through (see _roles); the reason for each.
_ROLE_BY_KEY = {
    "/Font": "fonts",
    "/XObject": "xobjects",
    "/Properties": "optional content",
    "/OC": "optional content",
    "/OCProperties": "optional content",
    "/AP": "appearance",
}
_ROLE_REASONS = {
    "fonts": "fonts the page draws with were changed",
    "xobjects": "content drawn on a page (a form XObject or image) was replaced",
    "optional content": "the visibility of optional content (layers) was changed",
    "appearance": "the appearance of an annotation or form field was replaced",
    "stamp": "the seal's visible stamp was replaced",
    "resources": "page properties or resources were changed",
}
# Annotation flags (ISO 32000-2 §12.5.3): Invisible, Hidden, NoView.
_NOT_SHOWN = 1 | 2 | 32


def changes_after(sig: EmbeddedPdfSignature) -> list[str]:
    """What the revisions after *sig*'s did beyond LTV data, in plain language (empty: LTV only)."""
    reader = sig.reader
    first, total = sig.signed_revision + 1, reader.xrefs.total_revisions
    if total - first > _MAX_LATER_REVISIONS:
        return [f"{total - first} incremental updates were appended"]
    try:
        kinds: dict[str, None] = dict.fromkeys(_stray_bytes(sig, total - first))
        # A document timestamp signs the revision that holds it: revision -> its signature dictionary.
        stamps = {
            ts.signed_revision: _ref(ts.sig_field.raw_get("/V"))
            for ts in reader.embedded_timestamp_signatures
        }
        for revision in range(first, total):
            old = reader.get_historical_resolver(revision - 1)
            new = reader.get_historical_resolver(revision)
            kinds.update(dict.fromkeys(_describe_update(reader, old, new, stamps.get(revision))))
        named = list(kinds)
        if len(named) > _MAX_NAMED:  # the reason stays one readable line
            return [*named[: _MAX_NAMED - 1], f"{len(named) - _MAX_NAMED + 1} more kinds of change"]
        return named
    except Exception as exc:  # fail closed: an update we cannot read is not an LTV update
        log.info("updates after a seal could not be analysed: %s", type(exc).__name__)
        return ["incremental updates were appended that cannot be analysed"]


def _stray_bytes(sig: EmbeddedPdfSignature, later_revisions: int) -> list[str]:
    """Bytes after the seal that belong to no revision: appended objects or trailers without an xref.

    Each incremental update ends with its own ``startxref``/``%%EOF`` (ISO 32000-2 §7.5.5); any other
    end-of-file marker after the seal, or bytes after the last one, are not part of an update a
    reader follows, but a reader that rebuilds a damaged file's xref would show them.
    """
    _, _, start2, length2 = (int(v) for v in sig.byte_range)
    stream = sig.reader.stream
    stream.seek(start2 + length2)
    tail = stream.read()
    end = tail.rstrip(b"\x00\t\n\f\r ")
    if tail.count(b"%%EOF") != later_revisions or tail.count(b"startxref") != later_revisions:
        return ["data was appended after sealing that is not a complete incremental update"]
    if end and not end.endswith(b"%%EOF"):
        return ["data was appended after the last incremental update"]
    return []


def _describe_update(reader: PdfFileReader, old: Any, new: Any, stamp: Any) -> list[str]:
    """The changes revision *new* made to *old*; *stamp* is its document timestamp's signature, if any."""
    changed = set(new.explicit_refs_in_revision())
    dss = _reachable(_raw(new.root, "/DSS"))
    dss_written = bool(changed & dss.keys()) or _raw_form(_raw(old.root, "/DSS")) != _raw_form(
        _raw(new.root, "/DSS")
    )
    ltv = stamp is not None or dss_written  # a revision that carries validation data
    switched = old.root_ref != new.root_ref
    if not changed and not switched:
        return ["an empty incremental update was appended"]
    kinds: list[str] = []
    if switched:
        kinds.append("the document catalog (/Root) was switched to another object")
    replaced = {ref for ref in changed if reader.xrefs.get_historical_ref(ref, old.revision) is not None}
    explained: set[Any] = set()
    if ltv:  # the DSS's own objects; not an object of the sealed document it was made to reference
        before = _reachable(_raw(old.root, "/DSS"))
        explained.update(ref for ref in dss if ref in before or ref not in replaced)
    (old_pages, old_nodes), (new_pages, new_nodes) = _pages(old), _pages(new)
    # Pages and tree nodes: what changed in them is named below, page by page.
    explained.update(old_nodes, new_nodes, (ref for ref, _ in old_pages), (ref for ref, _ in new_pages))
    if [ref for ref, _ in old_pages] != [ref for ref, _ in new_pages]:
        kinds.append("pages were added, removed or replaced")
    # Intermediate page tree nodes pass /Resources, /MediaBox, /CropBox, /Rotate down to their pages
    # (ISO 32000-2 §7.7.3.4): a node rewritten with other values changes every page below it.
    if any(
        _changed_keys(old(ref), new(ref)) - {"/Kids", "/Count"} for ref in new_nodes & old_nodes & changed
    ):
        kinds.append(_ROLE_REASONS["resources"])
    old_fields, new_fields = _fields(old, explained), _fields(new, explained)
    added_fields = new_fields.keys() - old_fields.keys()
    stamp_fields = {
        ref for ref in added_fields if new_fields[ref] and _ref(_raw(ref.get_object(), "/V")) == stamp
    }
    if any(new_fields[ref] for ref in added_fields - stamp_fields):
        kinds.append("another signature was added")
    if any(not new_fields[ref] for ref in added_fields):
        kinds.append("form fields were added")
    if any(ref in changed for ref in old_fields):
        kinds.append("form fields were filled in or changed")
    if any(_shown(ref.get_object()) for ref in stamp_fields):
        kinds.append("a document timestamp was given a visible widget on the page")
    form_ref = _ref(_raw(new.root, "/AcroForm"))
    if _form_changed(old, new, changed, stamp_fields) and not kinds:
        kinds.append("the interactive form (/AcroForm) was changed")
    kinds += _page_changes(old, old_pages, new_pages, old_fields, new_fields, changed, explained)
    catalog_keys = (
        _changed_keys(old.root, new.root) - _EXPLAINED_CATALOG_KEYS - (_LTV_CATALOG_KEYS if ltv else set())
    )
    if catalog_keys:
        named = ", ".join(sorted(key[:40] for key in catalog_keys)[:4])
        kinds.append(f"the document catalog was changed ({named})")
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
    explained.update((new.root_ref, old.root_ref, form_ref))
    roles = _roles(old, old_pages)
    if not switched and _changed_keys(_get(old.root, "/OCProperties"), _get(new.root, "/OCProperties")):
        kinds.append(_ROLE_REASONS["optional content"])
    for ref in sorted(replaced - explained, key=lambda r: (r.idnum, r.generation)):
        kinds.append(_ROLE_REASONS.get(roles.get(ref, ""), "objects of the sealed document were replaced"))
    kinds = list(dict.fromkeys(kinds))
    if metadata_changed and not kinds and not ltv:
        kinds.append("the document metadata (/Info or XMP) was changed")
    if not kinds and not ltv:
        return ["objects were added to the document"]  # unreferenced, but not LTV data
    return kinds


def _page_changes(
    old: Any,
    old_pages: list[tuple[Any, Any]],
    new_pages: list[tuple[Any, Any]],
    old_fields: dict[Any, bool],
    new_fields: dict[Any, bool],
    changed: set[Any],
    explained: set[Any],
) -> list[str]:
    """What changed on the pages both revisions have: annotations, content, the page dictionary."""
    annotations = flags = content = page_changed = False
    before = dict(old_pages)
    for new_ref, new_page in new_pages:
        old_page = before.get(new_ref)
        new_widgets = _array_refs(_raw(new_page, "/Annots"))  # annotations, field widgets included
        new_contents = _array_refs(_raw(new_page, "/Contents"))
        explained.update(new_widgets, new_contents)
        if old_page is None:  # a page that is new in this revision: named as pages added or replaced
            continue
        old_widgets = _array_refs(_raw(old_page, "/Annots"))
        old_contents = _array_refs(_raw(old_page, "/Contents"))
        new_annots = [r for r in new_widgets if r not in new_fields]
        annotations |= _annotation_entries(old_page, old_fields) != _annotation_entries(new_page, new_fields)
        # An annotation rewritten in place (the /Annots array itself is judged by the list above).
        array = _ref(_raw(new_page, "/Annots"))
        annotations |= any(r in changed for r in new_annots if r != array)
        # Hidden or shown again (the Hidden flag of a prepared annotation is a shadow attack's switch).
        flags |= any(
            _flags(_deref(r)) != _flags(old(r))
            for r in new_widgets
            if r in changed and r in old_widgets and r != array
        )
        content |= old_contents != new_contents or any(r in changed for r in new_contents)
        page_changed |= bool(_changed_keys(old_page, new_page) - {"/Annots", "/Contents"})
        page_changed |= new_ref in changed and old_widgets == new_widgets and old_contents == new_contents
    kinds = []
    if annotations:
        kinds.append("annotations were added or changed")
    if flags:
        kinds.append("annotations or form fields were hidden or shown (their /F flags changed)")
    if content:
        kinds.append("page content was replaced or overlaid")
    if page_changed:
        kinds.append(_ROLE_REASONS["resources"])
    return kinds


def _annotation_entries(page: Any, fields: dict[Any, bool]) -> list[bytes | None]:
    """A page's /Annots entries other than form fields' widgets, as written (direct ones included)."""
    annots = _get(page, "/Annots")
    if not isinstance(annots, generic.ArrayObject):
        return [_raw_form(annots)]
    entries = (annots.raw_get(i) for i in range(len(annots)))
    return [_raw_form(entry) for entry in entries if _ref(entry) not in fields]


def _form_changed(old: Any, new: Any, changed: set[Any], stamp_fields: set[Any]) -> bool:
    """Whether the interactive form changed beyond taking a document timestamp's field."""
    old_form, new_form = _get(old.root, "/AcroForm"), _get(new.root, "/AcroForm")
    form_ref = _ref(_raw(new.root, "/AcroForm"))
    if form_ref != _ref(_raw(old.root, "/AcroForm")) and old_form is not None:
        return True
    if not (form_ref in changed or _changed_keys(old_form, new_form)):
        return False
    if not stamp_fields or old_form is None or new_form is None:
        return True
    old_list = [r for r in _array_refs(_raw(old_form, "/Fields")) if r != _ref(_raw(old_form, "/Fields"))]
    new_list = [r for r in _array_refs(_raw(new_form, "/Fields")) if r != _ref(_raw(new_form, "/Fields"))]
    keys = _changed_keys(old_form, new_form) - {"/Fields", "/SigFlags"}
    return (
        bool(keys)
        or new_list[: len(old_list)] != old_list
        or not set(new_list[len(old_list) :]) <= stamp_fields
    )


def _roles(handler: Any, pages: list[tuple[Any, Any]]) -> dict[Any, str]:
    """Each object a page draws with, mapped to its role: fonts, xobjects, appearance, stamp, ...

    The role is the last resource category on the way to the object (a font inside a form XObject
    is a font); everything under a signature widget's appearance is the seal's stamp.
    """
    roots: list[tuple[Any, str]] = [(_raw(handler.root, "/OCProperties"), "optional content")]
    for _, page in pages:
        roots.append((_raw(page, "/Resources"), "resources"))
        for ref in _array_refs(_raw(page, "/Annots")):
            annotation = ref.get_object()
            if isinstance(annotation, generic.DictionaryObject):
                role = "stamp" if _is_signature_widget(annotation) else "appearance"
                roots.append((_raw(annotation, "/AP"), role))
    roles: dict[Any, str] = {}
    stack = [root for root in reversed(roots) if root[0] is not None]
    while stack and len(roles) < _MAX_TREE_NODES:
        value, role = stack.pop()
        if isinstance(value, generic.IndirectObject):
            if value.reference in roles:
                continue
            roles[value.reference] = role
            value = _deref(value)
        if isinstance(value, generic.DictionaryObject):
            for key in value:
                if key not in ("/Parent", "/P"):  # back to the page tree: not something drawn
                    inner = role if role == "stamp" else _ROLE_BY_KEY.get(key, role)
                    stack.append((value.raw_get(key), inner))
        elif isinstance(value, generic.ArrayObject):
            stack.extend((value.raw_get(i), role) for i in range(len(value)))
    return roles


def _reachable(value: Any) -> dict[Any, None]:
    """Every indirect object reachable from *value* (the DSS: certificates, CRLs, OCSP responses, VRI)."""
    seen: dict[Any, None] = {}
    stack = [value]
    while stack and len(seen) < _MAX_TREE_NODES:
        value = stack.pop()
        if isinstance(value, generic.IndirectObject):
            if value.reference in seen:
                continue
            seen[value.reference] = None
            value = _deref(value)
        if isinstance(value, generic.DictionaryObject):
            stack.extend(value.raw_get(key) for key in value)
        elif isinstance(value, generic.ArrayObject):
            stack.extend(value.raw_get(i) for i in range(len(value)))
    return seen


def _is_signature_widget(annotation: Any) -> bool:
    if _get(annotation, "/FT") == "/Sig":
        return True
    parent = _get(annotation, "/Parent")
    return isinstance(parent, generic.DictionaryObject) and _get(parent, "/FT") == "/Sig"


def _shown(widget: Any) -> bool:
    """Whether *widget* can draw on its page: a non-empty /Rect and none of the hiding flags."""
    rect = _get(widget, "/Rect")
    try:
        x1, y1, x2, y2 = (float(v) for v in rect)
    except (TypeError, ValueError):
        return False
    return abs(x2 - x1) > 0 and abs(y2 - y1) > 0 and not _flags(widget) & _NOT_SHOWN


def _flags(annotation: Any) -> int:
    value = _get(annotation, "/F")
    return int(value) if isinstance(value, generic.NumberObject) else 0


def _changed_keys(old: Any, new: Any) -> set[str]:
    """The keys whose (undereferenced) values differ between two dictionaries (None: no dictionary)."""
    empty: dict[Any, Any] = {}
    old_dict = old if isinstance(old, generic.DictionaryObject) else empty
    new_dict = new if isinstance(new, generic.DictionaryObject) else empty
    return {
        str(key)
        for key in set(old_dict) | set(new_dict)
        if _raw_form(_raw(old_dict, key)) != _raw_form(_raw(new_dict, key))
    }


def _raw_form(value: Any) -> bytes | None:
    """A value as written, references unresolved: equal forms mean equal values."""
    if value is None:
        return None
    out = io.BytesIO()
    value.write_to_stream(out, None)
    return out.getvalue()


def _deref(value: Any) -> Any:
    return value.get_object()


def _get(dictionary: Any, key: str) -> Any:
    """*dictionary*'s value for *key*, dereferenced; None when absent."""
    if dictionary is None or key not in dictionary:  # pyHanko's .get() would not dereference
        return None
    return dictionary[key]


def _raw(dictionary: Any, key: str) -> Any:
    """*dictionary*'s value for *key* without dereferencing it; None when absent."""
    return dictionary.raw_get(key) if dictionary is not None and key in dictionary else None


def _ref(value: Any) -> Any:
    return value.reference if isinstance(value, generic.IndirectObject) else None


def _array_refs(value: Any) -> list[Any]:
    """The references an array value holds (and the array's own, when it is indirect)."""
    refs = [] if _ref(value) is None else [_ref(value)]
    value = value.get_object() if value is not None else None
    if isinstance(value, generic.ArrayObject):
        refs.extend(r for r in (_ref(value.raw_get(i)) for i in range(len(value))) if r is not None)
    return refs


def _pages(handler: Any) -> tuple[list[tuple[Any, Any]], set[Any]]:
    """The page tree's leaves in order, as (reference, page dictionary), and its intermediate nodes."""
    pages: list[tuple[Any, Any]] = []
    nodes: set[Any] = set()
    seen: set[Any] = set()
    stack = [handler.root.raw_get("/Pages")]
    while stack:
        node_ref = stack.pop()
        if _ref(node_ref) in seen or len(seen) >= _MAX_TREE_NODES:
            # ISO 32000-2 §7.7.3.2: a tree, each node with one parent. A node met twice is a loop
            # (which would never end) or a page shown twice: not a document to judge.
            raise ValueError("the page tree is not a tree")
        seen.add(_ref(node_ref))
        node = node_ref.get_object()
        if _get(node, "/Type") == "/Pages":
            nodes.add(_ref(node_ref))
            kids = node.raw_get("/Kids")
            kids = kids.get_object()
            stack.extend(kids.raw_get(i) for i in reversed(range(len(kids))))
        else:
            pages.append((_ref(node_ref), node))
    return pages, nodes


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
