"""The languages Switchboard translates into: one list (names and ISO 639-1 codes) for every surface.

``/translate``'s autocomplete filters it, the Translate context menu maps the user's Discord locale onto
it, and anything else that names a target language resolves through :func:`find`.
"""

from __future__ import annotations

from typing import NamedTuple


class Language(NamedTuple):
    code: str
    name: str


#: English names, ISO 639-1 codes; ordered by name.
LANGUAGES: tuple[Language, ...] = tuple(
    sorted(
        (
            Language("af", "Afrikaans"),
            Language("ar", "Arabic"),
            Language("bg", "Bulgarian"),
            Language("bn", "Bengali"),
            Language("ca", "Catalan"),
            Language("cs", "Czech"),
            Language("cy", "Welsh"),
            Language("da", "Danish"),
            Language("de", "German"),
            Language("el", "Greek"),
            Language("en", "English"),
            Language("eo", "Esperanto"),
            Language("es", "Spanish"),
            Language("et", "Estonian"),
            Language("eu", "Basque"),
            Language("fa", "Persian"),
            Language("fi", "Finnish"),
            Language("fil", "Filipino"),
            Language("fr", "French"),
            Language("ga", "Irish"),
            Language("gl", "Galician"),
            Language("he", "Hebrew"),
            Language("hi", "Hindi"),
            Language("hr", "Croatian"),
            Language("hu", "Hungarian"),
            Language("hy", "Armenian"),
            Language("id", "Indonesian"),
            Language("is", "Icelandic"),
            Language("it", "Italian"),
            Language("ja", "Japanese"),
            Language("ka", "Georgian"),
            Language("kk", "Kazakh"),
            Language("ko", "Korean"),
            Language("la", "Latin"),
            Language("lt", "Lithuanian"),
            Language("lv", "Latvian"),
            Language("mk", "Macedonian"),
            Language("ms", "Malay"),
            Language("mt", "Maltese"),
            Language("nl", "Dutch"),
            Language("no", "Norwegian"),
            Language("pl", "Polish"),
            Language("pt", "Portuguese"),
            Language("pt-BR", "Portuguese (Brazil)"),
            Language("ro", "Romanian"),
            Language("ru", "Russian"),
            Language("sk", "Slovak"),
            Language("sl", "Slovenian"),
            Language("sq", "Albanian"),
            Language("sr", "Serbian"),
            Language("sv", "Swedish"),
            Language("sw", "Swahili"),
            Language("ta", "Tamil"),
            Language("th", "Thai"),
            Language("tr", "Turkish"),
            Language("uk", "Ukrainian"),
            Language("ur", "Urdu"),
            Language("vi", "Vietnamese"),
            Language("zh", "Chinese (Simplified)"),
            Language("zh-TW", "Chinese (Traditional)"),
        ),
        key=lambda lang: lang.name,
    )
)

_BY_KEY = {key.casefold(): lang for lang in LANGUAGES for key in (lang.code, lang.name)}
ENGLISH = _BY_KEY["en"]

#: Discord locales whose language is not simply the part before the dash.
_LOCALE_EXCEPTIONS = {"pt-br": "pt-BR", "zh-cn": "zh", "zh-tw": "zh-TW", "es-419": "es", "sv-se": "sv"}


def find(text: str) -> Language | None:
    """The language named by a code (``fr``) or an English name (``french``), case-insensitive."""
    return _BY_KEY.get(text.strip().casefold())


def matching(typed: str, limit: int = 25) -> list[Language]:
    """Languages whose name or code contains ``typed``; names starting with it first (autocomplete)."""
    key = typed.strip().casefold()
    found = [lang for lang in LANGUAGES if key in lang.name.casefold() or key == lang.code.casefold()]
    found.sort(key=lambda lang: (not lang.name.casefold().startswith(key), lang.code.casefold() != key, lang.name))
    return found[:limit]


def for_locale(locale: str) -> Language:
    """The language of a Discord locale (``en-US``, ``pt-BR``, ``es-419``); English when unknown."""
    key = locale.strip().casefold()
    code = _LOCALE_EXCEPTIONS.get(key, key.split("-")[0])
    return find(code) or ENGLISH
