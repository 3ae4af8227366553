"""Words of the synthetic world in Vietnamese and English: colours, shapes, relations, positions."""

from __future__ import annotations

from dataclasses import dataclass

from ...prompts import Lang

LANGS: tuple[Lang, ...] = ("vi", "en")


@dataclass(frozen=True)
class Colour:
    en: str
    vi: str
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Kind:
    en: str
    en_plural: str
    vi: str


COLOURS: tuple[Colour, ...] = (
    Colour("red", "đỏ", (214, 39, 40)),
    Colour("green", "xanh lá", (44, 160, 44)),
    Colour("blue", "xanh dương", (31, 90, 220)),
    Colour("yellow", "vàng", (238, 200, 20)),
    Colour("purple", "tím", (148, 70, 189)),
    Colour("orange", "cam", (255, 127, 14)),
    Colour("pink", "hồng", (240, 110, 180)),
)

KINDS: tuple[Kind, ...] = (
    Kind("circle", "circles", "hình tròn"),
    Kind("square", "squares", "hình vuông"),
    Kind("triangle", "triangles", "hình tam giác"),
    Kind("star", "stars", "ngôi sao"),
    Kind("diamond", "diamonds", "hình thoi"),
    Kind("rectangle", "rectangles", "hình chữ nhật"),
)
KIND_BY_NAME = {k.en: k for k in KINDS}
COLOUR_BY_NAME = {c.en: c for c in COLOURS}

# relation → (English, Vietnamese); "A left of B" means A's centre is left of B's box
RELATIONS: dict[str, tuple[str, str]] = {
    "left": ("left of", "ở bên trái"),
    "right": ("right of", "ở bên phải"),
    "above": ("above", "ở phía trên"),
    "below": ("below", "ở phía dưới"),
}

# 3×3 regions of the image, row by row
REGIONS: tuple[tuple[str, str], ...] = (
    ("in the top left", "ở góc trên bên trái"),
    ("at the top", "ở phía trên"),
    ("in the top right", "ở góc trên bên phải"),
    ("on the left", "ở bên trái"),
    ("in the centre", "ở giữa"),
    ("on the right", "ở bên phải"),
    ("in the bottom left", "ở góc dưới bên trái"),
    ("at the bottom", "ở phía dưới"),
    ("in the bottom right", "ở góc dưới bên phải"),
)

NUMBERS_EN = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
NUMBERS_VI = ("không", "một", "hai", "ba", "bốn", "năm", "sáu", "bảy", "tám", "chín", "mười")

PERSON = Kind("person", "people", "người")

WORDS = (
    "XIN", "CHÀO", "HELLO", "PHỞ", "CÀ PHÊ", "OPEN", "STOP", "HÀ NỘI", "SÀI GÒN", "MỞ CỬA",
    "ĐÓNG", "SALE", "GIẢM GIÁ", "TAXI", "BUS", "CHỢ", "HUẾ", "ĐÀ NẴNG", "CAFE", "BÁNH MÌ",
    "HOTEL", "KHÁCH SẠN", "LỐI RA", "EXIT", "NƯỚC", "TRÀ", "SÁCH", "BOOK", "MƯA", "NẮNG",
)

CHART_LABELS_EN = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
CHART_LABELS_VI = ("T2", "T3", "T4", "T5", "T6", "T7", "CN")


def noun_phrase(colour: Colour, kind: Kind, lang: str) -> str:
    """'the red circle' / 'hình tròn màu đỏ'."""
    return f"the {colour.en} {kind.en}" if lang == "en" else f"{kind.vi} màu {colour.vi}"


def indefinite(colour: Colour, kind: Kind, lang: str) -> str:
    """'a red circle' / 'một hình tròn màu đỏ'."""
    if lang == "en":
        article = "an" if colour.en[0] in "aeiou" else "a"
        return f"{article} {colour.en} {kind.en}"
    return f"một {kind.vi} màu {colour.vi}"


def number_word(n: int, lang: str) -> str:
    words = NUMBERS_EN if lang == "en" else NUMBERS_VI
    return words[n] if 0 <= n < len(words) else str(n)


def count_phrase(n: int, kind: Kind, lang: str) -> str:
    """'two circles' / 'hai hình tròn'."""
    if lang == "en":
        return f"{number_word(n, lang)} {kind.en if n == 1 else kind.en_plural}"
    return f"{number_word(n, lang)} {kind.vi}"


def join_list(items: list[str], lang: str) -> str:
    if len(items) <= 1:
        return "".join(items)
    conj = " and " if lang == "en" else " và "
    return ", ".join(items[:-1]) + conj + items[-1]


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]
