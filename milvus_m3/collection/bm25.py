"""The BM25 leg of a ``CollectionSpec``: its checks, its function field, the text field's analyzer.

``CollectionSpec(bm25=True)`` adds Milvus's BM25 function over the text field, with one analyzer
(``bm25_analyzer``) or, given ``bm25_languages``, Milvus's multi-language analyzer: one analyzer per
language code, chosen per row by the value of the varchar field ``bm25_language_field`` (a row whose
value is none of the codes is analysed by ``"default"``) and per query by ``analyzer_name``
(``HybridSearcher.search(language=...)``). Only Milvus servers >= 2.5.11 run it
(``Capabilities.multi_language_analyzer``); Milvus Lite accepts it and analyses every row as standard.

Private: ``schema.py`` and the searcher's planning call it. Imports neither pymilvus nor torch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..engine.capabilities import Capabilities
from ..errors import ConfigError
from .fields import BM25_FIELD, FunctionField, ScalarField

if TYPE_CHECKING:
    from .schema import CollectionSpec
from typing import Literal

# ---------------------------------------- analyzers
# The BM25 text analyzers by name (re-exported by schema.py, which builds the BM25 leg from them).

Analyzer = Literal["standard", "english", "chinese", "jieba", "whitespace", "icu", "lindera"]
BM25_ANALYZERS: Mapping[str, Mapping[str, Any]] = {
    "standard": {"type": "standard"},
    "english": {"type": "english"},
    "chinese": {"type": "chinese"},
    "jieba": {"tokenizer": "jieba"},
    "whitespace": {"tokenizer": "whitespace"},
    "icu": {"tokenizer": "icu"},
    "lindera": {"tokenizer": {"type": "lindera", "dict_kind": "ipadic"}},
}
"""The BM25 text analyzers by name: Milvus's built-in analyzer or tokenizer each name stands for.

Which to pick (measured on Milvus Lite 2.5.1, tests/integration/test_bm25.py): English ``english``
(stemming, stop words); other space-separated languages (Arabic, ...) ``standard``; Chinese ``chinese``;
Thai ``icu`` on a server, ``jieba`` on Milvus Lite (which cannot run ``icu``: jieba splits Thai into
single characters, so a query word still finds its passage); Japanese ``lindera`` (servers only).
``Capabilities.bm25_analyzers`` lists what an engine runs."""
DEFAULT_BM25_ANALYZER: Analyzer = "english"


__all__ = [
    "DEFAULT_LANGUAGE",
    "DEFAULT_LANGUAGE_FIELD",
    "LANGUAGE_FIELD_MAX_LENGTH",
    "LanguageAnalyzers",
    "analyzer_label",
    "bm25_function_fields",
    "check_bm25",
    "check_bm25_engine",
    "check_language",
    "check_languages",
    "text_field_analyzer",
    "with_language_field",
]

DEFAULT_LANGUAGE = "default"
"""The analyzer Milvus uses for a row whose language value names no analyzer (required by Milvus)."""
DEFAULT_LANGUAGE_FIELD = "language"
LANGUAGE_FIELD_MAX_LENGTH = 64
"""Bytes of the language field added when the spec does not declare it."""
_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,31}\Z")
_EXAMPLE = "{'en': 'english', 'zh': 'chinese', 'default': 'standard'}"


class LanguageAnalyzers(Mapping[str, str]):
    """Language code -> analyzer name (``BM25_ANALYZERS``): read-only, hashable, in code order."""

    __slots__ = ("_items",)

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._items: tuple[tuple[str, str], ...] = tuple(sorted(pairs))

    def __getitem__(self, key: str) -> str:
        for code, name in self._items:
            if code == key:
                return name
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (code for code, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __reduce__(self) -> tuple[Any, ...]:
        return (LanguageAnalyzers, (self._items,))

    def __repr__(self) -> str:
        return repr(dict(self._items))


def check_languages(spec: CollectionSpec) -> LanguageAnalyzers | None:
    """``spec.bm25_languages`` checked and normalised (None when not given), or a ConfigError with the fix."""
    value = spec.bm25_languages
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value:
        raise ConfigError(
            f"bm25_languages must map language codes to analyzer names, e.g. {_EXAMPLE}, got {value!r}"
        )
    if not spec.bm25:
        raise ConfigError(
            "bm25_languages needs bm25=True (milvus-m3 create --bm25): the languages choose the BM25 "
            "leg's analyzer"
        )
    if spec.bm25_analyzer != DEFAULT_BM25_ANALYZER:
        raise ConfigError(
            f"bm25_analyzer={spec.bm25_analyzer!r} is not used with bm25_languages (each language names its "
            f"analyzer); leave bm25_analyzer unset and give bm25_languages['default'] = {spec.bm25_analyzer!r}"
        )
    for code, name in value.items():
        if not isinstance(code, str) or not _CODE.match(code):
            raise ConfigError(
                f"bm25_languages: language code {code!r} must be letters, digits, '_' or '-', starting with "
                "a letter, at most 32 characters (e.g. 'en', 'zh', 'pt-BR')"
            )
        if name not in BM25_ANALYZERS:
            raise ConfigError(
                f"bm25_languages[{code!r}] is {name!r}; each language needs one of "
                f"{', '.join(BM25_ANALYZERS)} (english for English, chinese for Chinese, standard for others)"
            )
    if DEFAULT_LANGUAGE not in value:
        raise ConfigError(
            f"bm25_languages needs a {DEFAULT_LANGUAGE!r} analyzer (Milvus analyses rows whose language is "
            f"none of the codes with it), e.g. {_EXAMPLE}"
        )
    return LanguageAnalyzers((str(c), str(n)) for c, n in value.items())


def with_language_field(
    scalar_fields: Iterable[ScalarField], languages: Mapping[str, str] | None, field: str
) -> tuple[ScalarField, ...]:
    """``scalar_fields`` with the language field declared (a required varchar when not given)."""

    fields = tuple(scalar_fields)
    if languages is None:
        if field != DEFAULT_LANGUAGE_FIELD:
            raise ConfigError(
                f"bm25_language_field={field!r} needs bm25_languages (the analyzer of each language code)"
            )
        return fields
    if not isinstance(field, str) or not field.isidentifier():
        raise ConfigError(f"bm25_language_field must be a field name (an identifier), got {field!r}")
    declared = [f for f in fields if f.name == field]
    if not declared:
        return (*fields, ScalarField(name=field, dtype="varchar", max_length=LANGUAGE_FIELD_MAX_LENGTH))
    sf = declared[0]
    if sf.dtype != "varchar" or sf.nullable or sf.default is not None:
        raise ConfigError(
            f"bm25_language_field {field!r} must be a varchar ScalarField without a default and not "
            "nullable: every row names its language (Milvus reads it to pick the row's analyzer)"
        )
    return fields


def check_bm25(spec: CollectionSpec) -> None:
    """The single-analyzer choice and BM25's k1 / b, with the fix."""
    if spec.bm25_analyzer not in BM25_ANALYZERS:
        raise ConfigError(
            f"bm25_analyzer must be one of {', '.join(BM25_ANALYZERS)}, got {spec.bm25_analyzer!r} "
            "(english for English, chinese for Chinese, standard for other space-separated languages)"
        )
    for name, value, top in (("bm25_k1", spec.bm25_k1, 3.0), ("bm25_b", spec.bm25_b, 1.0)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= top:
            raise ConfigError(f"{name} must be a number in [0, {top:g}] (Milvus's range), got {value!r}")


def _languages(spec: CollectionSpec) -> LanguageAnalyzers | None:
    value = spec.bm25_languages
    return (
        value if value is None or isinstance(value, LanguageAnalyzers) else LanguageAnalyzers(value.items())
    )


def check_bm25_engine(spec: CollectionSpec, caps: Capabilities) -> None:
    """Refuse what this engine accepts at create time but cannot run (a BM25 analyzer), with the fix."""
    if not spec.bm25:
        return
    languages = _languages(spec)
    if languages is not None and not caps.multi_language_analyzer:
        raise ConfigError(
            f"bm25_languages needs Milvus's multi-language analyzer, which {caps.display_name} does not run "
            "(Milvus Lite accepts the collection, then analyses every row as standard: no stemming, no "
            "Chinese segmentation); use one analyzer per collection (bm25_analyzer: chinese for Chinese, "
            "english for English, standard for Arabic and other spaced scripts, jieba for Thai on Milvus "
            "Lite; the README's analyzer table), or a Milvus server >= 2.5.11"
        )
    names = sorted(set(languages.values())) if languages is not None else [spec.bm25_analyzer]
    for name in names:
        if name not in caps.bm25_analyzers:
            raise ConfigError(
                f"bm25_analyzer {name!r} cannot run on {caps.display_name} (it accepts the collection, then "
                f"every insert fails); use one of {', '.join(caps.bm25_analyzers)} (jieba for Thai, "
                "standard for Arabic), or a Milvus server"
            )


def _plain(value: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy made of plain dicts (pymilvus serialises only ``dict`` analyzer params)."""
    result: dict[str, Any] = json.loads(json.dumps(value, default=dict))
    return result


def bm25_function_fields(spec: CollectionSpec) -> tuple[FunctionField, ...]:
    """The engine-filled fields of ``spec`` (the BM25 leg; () without it)."""

    if not spec.bm25:
        return ()
    languages = _languages(spec)
    multi = None
    if languages is not None:
        multi = {
            "analyzers": {code: _plain(BM25_ANALYZERS[name]) for code, name in languages.items()},
            "by_field": spec.bm25_language_field,
        }
    return (
        FunctionField(
            name=BM25_FIELD,
            analyzer_params=_plain(BM25_ANALYZERS[spec.bm25_analyzer]),
            multi_analyzer_params=multi,
            index_params={"bm25_k1": float(spec.bm25_k1), "bm25_b": float(spec.bm25_b)},
        ),
    )


def text_field_analyzer(function_fields: Sequence[FunctionField]) -> dict[str, Any]:
    """The text field's analyzer keyword arguments for ``schema.add_field``: the one place they are built.

    ``multi_analyzer_params`` when the function fields carry one (the multi-language analyzer), else
    ``analyzer_params``; all function fields read the one text field, so they must agree."""
    if not function_fields:
        return {}
    forms = {
        json.dumps(
            [_plain(ff.analyzer_params), ff.multi_analyzer_params and _plain(ff.multi_analyzer_params)]
        )
        for ff in function_fields
    }
    if len(forms) > 1:
        raise ConfigError(
            "function fields read the one text field: give them all the same analyzer_params and "
            "multi_analyzer_params"
        )
    first = function_fields[0]
    if first.multi_analyzer_params is not None:
        return {"enable_analyzer": True, "multi_analyzer_params": _plain(first.multi_analyzer_params)}
    return {"enable_analyzer": True, "analyzer_params": _plain(first.analyzer_params)}


def analyzer_label(spec: CollectionSpec) -> str:
    """How messages name the BM25 analyzer: ``english``, or ``by language (default=standard, en=english)``."""
    languages = _languages(spec)
    if languages is None:
        return str(spec.bm25_analyzer)
    pairs = ", ".join(f"{code}={name}" for code, name in languages.items())
    return f"by {spec.bm25_language_field} ({pairs})"


def check_language(spec: CollectionSpec, language: Any, *, collection: str) -> str:
    """``language`` as the analyzer name of a BM25 query (a code of the collection's bm25_languages)."""
    languages = _languages(spec)
    if languages is None:
        raise ConfigError(
            f"language= given, but collection {collection!r} has no per-language BM25 analyzers; create it "
            "with CollectionSpec(bm25=True, bm25_languages={...}) (milvus-m3 create --bm25 --bm25-languages "
            "en=english,zh=chinese,default=standard) on a Milvus server >= 2.5.11, or search without language"
        )
    if not isinstance(language, str) or language not in languages:
        raise ConfigError(
            f"language {language!r} is not one of collection {collection!r}'s bm25_languages: "
            f"{', '.join(languages)}"
        )
    return language
