"""A built-in, deterministic, bilingual (English + Chinese) demo corpus for training a tiny GLM.

The demo trains a model of a few million parameters on a couple of CPU cores in minutes and must show that it
learned to fill blanks, without downloading anything. So the corpus is generated from small tables in this module:

- facts: countries and capitals, chemical elements, single-digit arithmetic, and the order of months and weekdays,
  each stated with several English templates and their Chinese translations. A `Fact` is one such sentence with its
  answer replaced by `[MASK]`: the held-out evaluation item;
- sentence pairs: an English sentence followed by its Chinese translation, from the fact templates and from small
  everyday-sentence tables that reuse the same country, capital, month and weekday names;
- optionally English prose: docstrings of the running Python's standard library, read with `ast` (nothing is
  imported) in sorted file order and capped in size.

Everything is a pure function of the seed (`random.Random(seed)`); the prose also depends on the Python installation.
"""

import ast
import functools
import json
import os
import random
import re
import sysconfig
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

MASK = "[MASK]"
LANGUAGES = ("en", "zh")

# Largest `held_out` fraction: one fact per entity and language, out of up to four templates per language.
MAX_HELD_OUT = 0.25

_MIXED_FACT_PASSES = 2  # times every training fact sentence recurs in mixed documents (besides its entity document)
_PROSE_MAX_BYTES = 1_500_000
_PROSE_DOC_CHARS = 1_000
_PROSE_MIN_CHARS = 80
_PROSE_SKIP_DIRS = frozenset(
    {"__pycache__", "dist-packages", "ensurepip", "idlelib", "lib2to3", "site-packages", "test", "tests", "turtledemo"}
)

# (English country, English capital, Chinese country, Chinese capital)
_CAPITALS = (
    ("France", "Paris", "法国", "巴黎"),
    ("Germany", "Berlin", "德国", "柏林"),
    ("Italy", "Rome", "意大利", "罗马"),
    ("Spain", "Madrid", "西班牙", "马德里"),
    ("Portugal", "Lisbon", "葡萄牙", "里斯本"),
    ("Britain", "London", "英国", "伦敦"),
    ("Ireland", "Dublin", "爱尔兰", "都柏林"),
    ("Belgium", "Brussels", "比利时", "布鲁塞尔"),
    ("Austria", "Vienna", "奥地利", "维也纳"),
    ("Switzerland", "Bern", "瑞士", "伯尔尼"),
    ("Poland", "Warsaw", "波兰", "华沙"),
    ("Greece", "Athens", "希腊", "雅典"),
    ("Sweden", "Stockholm", "瑞典", "斯德哥尔摩"),
    ("Norway", "Oslo", "挪威", "奥斯陆"),
    ("Denmark", "Copenhagen", "丹麦", "哥本哈根"),
    ("Finland", "Helsinki", "芬兰", "赫尔辛基"),
    ("Iceland", "Reykjavik", "冰岛", "雷克雅未克"),
    ("Estonia", "Tallinn", "爱沙尼亚", "塔林"),
    ("Latvia", "Riga", "拉脱维亚", "里加"),
    ("Lithuania", "Vilnius", "立陶宛", "维尔纽斯"),
    ("Russia", "Moscow", "俄罗斯", "莫斯科"),
    ("Ukraine", "Kyiv", "乌克兰", "基辅"),
    ("Hungary", "Budapest", "匈牙利", "布达佩斯"),
    ("Romania", "Bucharest", "罗马尼亚", "布加勒斯特"),
    ("Bulgaria", "Sofia", "保加利亚", "索非亚"),
    ("Serbia", "Belgrade", "塞尔维亚", "贝尔格莱德"),
    ("Croatia", "Zagreb", "克罗地亚", "萨格勒布"),
    ("Slovakia", "Bratislava", "斯洛伐克", "布拉迪斯拉发"),
    ("Slovenia", "Ljubljana", "斯洛文尼亚", "卢布尔雅那"),
    ("Albania", "Tirana", "阿尔巴尼亚", "地拉那"),
    ("Cyprus", "Nicosia", "塞浦路斯", "尼科西亚"),
    ("Malta", "Valletta", "马耳他", "瓦莱塔"),
    ("Georgia", "Tbilisi", "格鲁吉亚", "第比利斯"),
    ("Armenia", "Yerevan", "亚美尼亚", "埃里温"),
    ("Turkey", "Ankara", "土耳其", "安卡拉"),
    ("Egypt", "Cairo", "埃及", "开罗"),
    ("Libya", "Tripoli", "利比亚", "的黎波里"),
    ("Sudan", "Khartoum", "苏丹", "喀土穆"),
    ("Morocco", "Rabat", "摩洛哥", "拉巴特"),
    ("Algeria", "Algiers", "阿尔及利亚", "阿尔及尔"),
    ("Senegal", "Dakar", "塞内加尔", "达喀尔"),
    ("Mali", "Bamako", "马里", "巴马科"),
    ("Ghana", "Accra", "加纳", "阿克拉"),
    ("Nigeria", "Abuja", "尼日利亚", "阿布贾"),
    ("Ethiopia", "Addis Ababa", "埃塞俄比亚", "亚的斯亚贝巴"),
    ("Kenya", "Nairobi", "肯尼亚", "内罗毕"),
    ("Uganda", "Kampala", "乌干达", "坎帕拉"),
    ("Rwanda", "Kigali", "卢旺达", "基加利"),
    ("Tanzania", "Dodoma", "坦桑尼亚", "多多马"),
    ("Angola", "Luanda", "安哥拉", "罗安达"),
    ("Zambia", "Lusaka", "赞比亚", "卢萨卡"),
    ("Zimbabwe", "Harare", "津巴布韦", "哈拉雷"),
    ("Mozambique", "Maputo", "莫桑比克", "马普托"),
    ("Madagascar", "Antananarivo", "马达加斯加", "塔那那利佛"),
    ("China", "Beijing", "中国", "北京"),
    ("Japan", "Tokyo", "日本", "东京"),
    ("South Korea", "Seoul", "韩国", "首尔"),
    ("North Korea", "Pyongyang", "朝鲜", "平壤"),
    ("Mongolia", "Ulaanbaatar", "蒙古", "乌兰巴托"),
    ("India", "New Delhi", "印度", "新德里"),
    ("Pakistan", "Islamabad", "巴基斯坦", "伊斯兰堡"),
    ("Bangladesh", "Dhaka", "孟加拉国", "达卡"),
    ("Nepal", "Kathmandu", "尼泊尔", "加德满都"),
    ("Myanmar", "Naypyidaw", "缅甸", "内比都"),
    ("Thailand", "Bangkok", "泰国", "曼谷"),
    ("Vietnam", "Hanoi", "越南", "河内"),
    ("Cambodia", "Phnom Penh", "柬埔寨", "金边"),
    ("Laos", "Vientiane", "老挝", "万象"),
    ("Malaysia", "Kuala Lumpur", "马来西亚", "吉隆坡"),
    ("Indonesia", "Jakarta", "印度尼西亚", "雅加达"),
    ("Iran", "Tehran", "伊朗", "德黑兰"),
    ("Iraq", "Baghdad", "伊拉克", "巴格达"),
    ("Syria", "Damascus", "叙利亚", "大马士革"),
    ("Jordan", "Amman", "约旦", "安曼"),
    ("Lebanon", "Beirut", "黎巴嫩", "贝鲁特"),
    ("Saudi Arabia", "Riyadh", "沙特阿拉伯", "利雅得"),
    ("Qatar", "Doha", "卡塔尔", "多哈"),
    ("Oman", "Muscat", "阿曼", "马斯喀特"),
    ("Afghanistan", "Kabul", "阿富汗", "喀布尔"),
    ("Kazakhstan", "Astana", "哈萨克斯坦", "阿斯塔纳"),
    ("Uzbekistan", "Tashkent", "乌兹别克斯坦", "塔什干"),
    ("Canada", "Ottawa", "加拿大", "渥太华"),
    ("Cuba", "Havana", "古巴", "哈瓦那"),
    ("Jamaica", "Kingston", "牙买加", "金斯敦"),
    ("Colombia", "Bogota", "哥伦比亚", "波哥大"),
    ("Venezuela", "Caracas", "委内瑞拉", "加拉加斯"),
    ("Ecuador", "Quito", "厄瓜多尔", "基多"),
    ("Peru", "Lima", "秘鲁", "利马"),
    ("Chile", "Santiago", "智利", "圣地亚哥"),
    ("Argentina", "Buenos Aires", "阿根廷", "布宜诺斯艾利斯"),
    ("Uruguay", "Montevideo", "乌拉圭", "蒙得维的亚"),
    ("Paraguay", "Asuncion", "巴拉圭", "亚松森"),
    ("Brazil", "Brasilia", "巴西", "巴西利亚"),
    ("Australia", "Canberra", "澳大利亚", "堪培拉"),
    ("New Zealand", "Wellington", "新西兰", "惠灵顿"),
    ("Fiji", "Suva", "斐济", "苏瓦"),
)

# (English name, symbol, Chinese name, atomic number)
_ELEMENTS = (
    ("Hydrogen", "H", "氢", 1),
    ("Helium", "He", "氦", 2),
    ("Lithium", "Li", "锂", 3),
    ("Beryllium", "Be", "铍", 4),
    ("Boron", "B", "硼", 5),
    ("Carbon", "C", "碳", 6),
    ("Nitrogen", "N", "氮", 7),
    ("Oxygen", "O", "氧", 8),
    ("Fluorine", "F", "氟", 9),
    ("Neon", "Ne", "氖", 10),
    ("Sodium", "Na", "钠", 11),
    ("Magnesium", "Mg", "镁", 12),
    ("Aluminium", "Al", "铝", 13),
    ("Silicon", "Si", "硅", 14),
    ("Phosphorus", "P", "磷", 15),
    ("Sulfur", "S", "硫", 16),
    ("Chlorine", "Cl", "氯", 17),
    ("Argon", "Ar", "氩", 18),
    ("Potassium", "K", "钾", 19),
    ("Calcium", "Ca", "钙", 20),
    ("Scandium", "Sc", "钪", 21),
    ("Titanium", "Ti", "钛", 22),
    ("Vanadium", "V", "钒", 23),
    ("Chromium", "Cr", "铬", 24),
    ("Manganese", "Mn", "锰", 25),
    ("Iron", "Fe", "铁", 26),
    ("Cobalt", "Co", "钴", 27),
    ("Nickel", "Ni", "镍", 28),
    ("Copper", "Cu", "铜", 29),
    ("Zinc", "Zn", "锌", 30),
    ("Gallium", "Ga", "镓", 31),
    ("Germanium", "Ge", "锗", 32),
    ("Arsenic", "As", "砷", 33),
    ("Selenium", "Se", "硒", 34),
    ("Bromine", "Br", "溴", 35),
    ("Krypton", "Kr", "氪", 36),
    ("Silver", "Ag", "银", 47),
    ("Tin", "Sn", "锡", 50),
    ("Iodine", "I", "碘", 53),
    ("Xenon", "Xe", "氙", 54),
    ("Platinum", "Pt", "铂", 78),
    ("Gold", "Au", "金", 79),
    ("Mercury", "Hg", "汞", 80),
    ("Lead", "Pb", "铅", 82),
    ("Uranium", "U", "铀", 92),
)

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_MONTHS_ZH = ("一月", "二月", "三月", "四月", "五月", "六月", "七月", "八月", "九月", "十月", "十一月", "十二月")
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_WEEKDAYS_ZH = ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日")

# A fact template is (format string, the slot that is the answer); a row pairs an English template with its Chinese
# translation, so the same row of one entity gives a translation pair.
_Template = tuple[str, str]
_Row = tuple[_Template, _Template]

_CAPITAL_ROWS: tuple[_Row, ...] = (
    (("The capital of {country} is {capital}.", "capital"), ("{country}的首都是{capital}。", "capital")),
    (("{capital} is the capital of {country}.", "country"), ("{capital}是{country}的首都。", "country")),
    (("The capital city of {country} is called {capital}.", "capital"), ("{country}的首都叫{capital}。", "capital")),
    (("{capital} is a city in {country}.", "country"), ("{capital}是{country}的一座城市。", "country")),
)
_ELEMENT_ROWS: tuple[_Row, ...] = (
    (("The chemical symbol for {name} is {symbol}.", "symbol"), ("{name}的化学符号是{symbol}。", "symbol")),
    (("{symbol} is the chemical symbol of {name}.", "name"), ("{symbol}是{name}的化学符号。", "name")),
    (("The atomic number of {name} is {number}.", "number"), ("{name}的原子序数是{number}。", "number")),
    (("The element with atomic number {number} is {name}.", "name"), ("原子序数为{number}的元素是{name}。", "name")),
)
_PLUS_ROWS: tuple[_Row, ...] = (
    (("{a} plus {b} is {c}.", "c"), ("{a}加{b}等于{c}。", "c")),
    (("The sum of {a} and {b} is {c}.", "c"), ("{a}与{b}的和是{c}。", "c")),
    (("Adding {a} and {b} gives {c}.", "c"), ("{a}加上{b}得{c}。", "c")),
)
_MINUS_ROWS: tuple[_Row, ...] = (
    (("{a} minus {b} is {c}.", "c"), ("{a}减{b}等于{c}。", "c")),
    (("The difference between {a} and {b} is {c}.", "c"), ("{a}与{b}的差是{c}。", "c")),
    (("Subtracting {b} from {a} gives {c}.", "c"), ("{a}减去{b}得{c}。", "c")),
)
_TIMES_ROWS: tuple[_Row, ...] = (
    (("{a} times {b} is {c}.", "c"), ("{a}乘{b}等于{c}。", "c")),
    (("The product of {a} and {b} is {c}.", "c"), ("{a}与{b}的积是{c}。", "c")),
    (("Multiplying {a} by {b} gives {c}.", "c"), ("{a}乘以{b}得{c}。", "c")),
)
_MONTH_ROWS: tuple[_Row, ...] = (
    (("The month after {a} is {b}.", "b"), ("{a}之后是{b}。", "b")),
    (("The month before {b} is {a}.", "a"), ("{b}之前是{a}。", "a")),
    (("{a} is followed by {b}.", "b"), ("{a}的下一个月是{b}。", "b")),
    (("{b} comes after {a}.", "a"), ("{b}的上一个月是{a}。", "a")),
)
_WEEKDAY_ROWS: tuple[_Row, ...] = (
    (("The day after {a} is {b}.", "b"), ("{a}之后是{b}。", "b")),
    (("The day before {b} is {a}.", "a"), ("{b}之前是{a}。", "a")),
    (("{a} is followed by {b}.", "b"), ("{a}的下一天是{b}。", "b")),
    (("{b} comes after {a}.", "a"), ("{b}的前一天是{a}。", "a")),
)

# Everyday sentence pairs: (English subject, Chinese subject, takes the third-person singular verb form).
_SUBJECTS = (
    ("I", "我", False),
    ("You", "你", False),
    ("We", "我们", False),
    ("They", "他们", False),
    ("He", "他", True),
    ("She", "她", True),
    ("My friend", "我的朋友", True),
    ("The teacher", "老师", True),
    ("My mother", "我妈妈", True),
    ("My father", "我爸爸", True),
    ("The children", "孩子们", False),
    ("Our neighbours", "我们的邻居", False),
)
_FOODS = (("apples", "苹果"), ("rice", "米饭"), ("noodles", "面条"), ("bread", "面包"), ("dumplings", "饺子"))
_DRINKS = (("tea", "茶"), ("coffee", "咖啡"), ("milk", "牛奶"), ("water", "水"))
_READING = (("books", "书"), ("newspapers", "报纸"), ("letters", "信"))
# (base form, third-person singular form, Chinese verb, objects it takes)
_VERBS = (
    ("eat", "eats", "吃", _FOODS),
    ("drink", "drinks", "喝", _DRINKS),
    ("read", "reads", "看", _READING),
    ("write", "writes", "写", (("letters", "信"),)),
    ("like", "likes", "喜欢", _FOODS + _DRINKS + _READING),
    ("buy", "buys", "买", _FOODS + _DRINKS + _READING),
)
_HABIT_ROWS = (
    ("{S} {V} {O}.", "{S_zh}{V_zh}{O_zh}。"),
    ("{S} {V} {O} every day.", "{S_zh}每天{V_zh}{O_zh}。"),
    ("{S} {do} not {Vb} {O}.", "{S_zh}不{V_zh}{O_zh}。"),
    ("{Do} {s} {Vb} {O}?", "{S_zh}{V_zh}{O_zh}吗？"),
)


@dataclass(frozen=True)
class Fact:
    """One evaluation item: `text` holds exactly one `[MASK]` standing for `answer`.

    `kind` is the fact table it comes from ("capital", "element", "arithmetic", "calendar") and `language` is "en"
    or "zh"; both group items for reporting and for the frequency baseline.
    """

    text: str
    answer: str
    kind: str
    language: str

    def __post_init__(self) -> None:
        if self.text.count(MASK) != 1:
            raise ValueError(f"a Fact needs exactly one {MASK}: {self.text!r}")

    @property
    def filled(self) -> str:
        """The sentence with the answer in place of `[MASK]`: what the training text states."""
        return self.text.replace(MASK, self.answer)


class _Item(NamedTuple):
    """A fact with the entity it is about and its template row (which pairs it with its translation)."""

    entity: str
    row: int
    fact: Fact


def facts(seed: int = 0) -> list[Fact]:
    """Every fact item (each template of each entity, in both languages), shuffled deterministically by `seed`."""
    return [item.fact for item in _shuffled_items(seed)]


def split_facts(seed: int = 0, held_out: float = 0.1) -> tuple[list[Fact], list[Fact]]:
    """Split `facts(seed)` into (train, held_out) for measuring blank filling on sentences never trained on.

    What is held out is (entity, template) pairs, not whole entities: a held-out sentence never appears verbatim in
    the training text, but its entity (a country, an element, a sum, a pair of months) is still stated there by its
    other templates, in both languages. A tiny model cannot guess a capital it has never seen, but it can learn to
    carry a fact across phrasings and languages, and that is what the held-out accuracy measures. At most one fact
    per entity and language is held out, so every entity keeps at least two training facts in each language.

    `held_out` is the fraction held out within each (kind, language), at most `MAX_HELD_OUT`.
    """
    if not 0.0 <= held_out <= MAX_HELD_OUT:
        raise ValueError(f"held_out must be in [0, {MAX_HELD_OUT}], got {held_out}")
    items = _shuffled_items(seed)
    chosen = _choose_held_out(items, held_out)
    train = [item.fact for index, item in enumerate(items) if index not in chosen]
    return train, [item.fact for index, item in enumerate(items) if index in chosen]


def documents(
    seed: int = 0,
    include_prose: bool = True,
    held_out: list[Fact] | None = None,
    include_everyday: bool = True,
) -> list[str]:
    """Training documents of a few sentences each, shuffled deterministically by `seed`.

    They mix fact statements (one document per entity with all its training facts, plus documents of random facts),
    English-then-Chinese sentence pairs of the facts and, with `include_everyday`, of everyday sentences that reuse
    the facts' names, and, with `include_prose`, standard-library docstrings. No document contains the filled text
    of a `held_out` fact; `None` holds nothing out.
    """
    rng = random.Random(seed)
    excluded = {fact.filled for fact in held_out or ()}
    items = [item for item in _items() if item.fact.filled not in excluded]
    docs = _fact_documents(items, rng) + _pair_documents(items, rng, include_everyday)
    if include_prose:
        docs += _prose_documents()
    rng.shuffle(docs)
    return _without_leaks(docs, excluded)


def translation_pairs(held_out: list[Fact] | None = None) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(English, Chinese) statements of the same fact, split into (those `documents(held_out=...)` may contain,
    those involving a held-out fact): a translation task whose test pairs were never in the training text."""
    excluded = {fact.filled for fact in held_out or ()}
    pairs = _fact_pairs(list(_items()))
    seen = [pair for pair in pairs if not set(pair) & excluded]
    unseen = [pair for pair in pairs if set(pair) & excluded]
    return seen, unseen


def frequency_baseline(train: list[Fact], held_out: list[Fact]) -> float:
    """Exact-match accuracy on `held_out` of always answering the most frequent `train` answer of the same kind and
    language (ties go to the alphabetically first answer): the accuracy a model must beat to have learned facts."""
    if not held_out:
        raise ValueError("held_out must not be empty")
    counts: dict[tuple[str, str], Counter[str]] = {}
    for fact in train:
        counts.setdefault((fact.kind, fact.language), Counter())[fact.answer] += 1
    guesses = {group: _most_frequent(counter) for group, counter in counts.items()}
    hits = sum(guesses.get((fact.kind, fact.language)) == fact.answer for fact in held_out)
    return hits / len(held_out)


def choice_items(facts: list[Fact], answer_pool: list[Fact], distractors: int = 3, seed: int = 0) -> list[dict]:
    """Multiple-choice items (lm-eval style) from facts: `context` (the text before the blank), `choices` (the true
    answer and up to `distractors` other answers of the same kind and language from `answer_pool`, shuffled) and
    `label` (the true answer's index)."""
    rng = random.Random(seed)
    items = []
    for fact in facts:
        pool = {f.answer for f in answer_pool if (f.kind, f.language) == (fact.kind, fact.language)} - {fact.answer}
        choices = [fact.answer, *rng.sample(sorted(pool), min(distractors, len(pool)))]
        rng.shuffle(choices)
        context = fact.text.split(MASK)[0].rstrip()
        items.append({"context": context, "choices": choices, "label": choices.index(fact.answer)})
    return items


def write_lm_eval_task(folder: str | Path, name: str, items: list[dict]) -> str:
    """Writes `choice_items` as a local lm-eval multiple-choice task (`NAME.jsonl` and `NAME.yaml` in `folder`, for
    `TaskManager(include_path=folder)`): each choice is scored as the continuation of `context` after a space, the
    metric is accuracy. Returns the task name."""
    folder = Path(folder)
    data = folder / f"{name}.jsonl"
    data.write_text("\n".join(json.dumps(item, ensure_ascii=False) for item in items), encoding="utf-8")
    (folder / f"{name}.yaml").write_text(
        f"task: {name}\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        "doc_to_text: '{{context}}'\n"
        "doc_to_choice: '{{choices}}'\n"
        "doc_to_target: label\n"
        "target_delimiter: ' '\n"
        "metric_list:\n  - metric: acc\n",
        encoding="utf-8",
    )
    return name


def _most_frequent(counter: Counter[str]) -> str:
    return min(counter.items(), key=lambda pair: (-pair[1], pair[0]))[0]


def _shuffled_items(seed: int) -> list[_Item]:
    items = list(_items())
    random.Random(seed).shuffle(items)
    return items


def _choose_held_out(items: list[_Item], fraction: float) -> set[int]:
    """Indices of the held-out items: the first items in `items` order, per (kind, language) up to `fraction` of it,
    skipping an entity and language that already gave one."""
    sizes = Counter((item.fact.kind, item.fact.language) for item in items)
    taken: Counter[tuple[str, str]] = Counter()
    used: set[tuple[str, str]] = set()
    chosen: set[int] = set()
    for index, (entity, _, fact) in enumerate(items):
        group = (fact.kind, fact.language)
        if taken[group] < round(fraction * sizes[group]) and (entity, fact.language) not in used:
            chosen.add(index)
            taken[group] += 1
            used.add((entity, fact.language))
    return chosen


@functools.cache
def _items() -> tuple[_Item, ...]:
    """All facts in table order; the single source that `facts`, `split_facts` and `documents` draw from."""
    return (*_capital_items(), *_element_items(), *_arithmetic_items(), *_calendar_items())


def _fill(kind: str, entity: str, slots: tuple[dict[str, str], dict[str, str]], rows: tuple[_Row, ...]) -> list[_Item]:
    """The facts of one entity: every template row in both languages, with the row's answer slot masked."""
    items = []
    for row_index, row in enumerate(rows):
        for language, (template, answer_slot), values in zip(LANGUAGES, row, slots, strict=True):
            text = template.format_map({**values, answer_slot: MASK})
            items.append(_Item(f"{kind}:{entity}", row_index, Fact(text, values[answer_slot], kind, language)))
    return items


def _capital_items() -> list[_Item]:
    items = []
    for country, capital, country_zh, capital_zh in _CAPITALS:
        slots = ({"country": country, "capital": capital}, {"country": country_zh, "capital": capital_zh})
        items += _fill("capital", country, slots, _CAPITAL_ROWS)
    return items


def _element_items() -> list[_Item]:
    items = []
    for name, symbol, name_zh, number in _ELEMENTS:
        slots = (
            {"name": name, "symbol": symbol, "number": str(number)},
            {"name": name_zh, "symbol": symbol, "number": str(number)},
        )
        items += _fill("element", name, slots, _ELEMENT_ROWS)
    return items


def _arithmetic_items() -> list[_Item]:
    """Single-digit sums, differences (never negative) and products."""
    operations = (
        ("+", _PLUS_ROWS, [(a, b, a + b) for a in range(10) for b in range(10)]),
        ("-", _MINUS_ROWS, [(a, b, a - b) for a in range(10) for b in range(a + 1)]),
        ("*", _TIMES_ROWS, [(a, b, a * b) for a in range(1, 10) for b in range(1, 10)]),
    )
    items = []
    for symbol, rows, triples in operations:
        for a, b, c in triples:
            values = {"a": str(a), "b": str(b), "c": str(c)}
            items += _fill("arithmetic", f"{a}{symbol}{b}", (values, values), rows)
    return items


def _calendar_items() -> list[_Item]:
    """Each month and weekday with the one after it (December is followed by January, Sunday by Monday)."""
    items = []
    for names, names_zh, rows in ((_MONTHS, _MONTHS_ZH, _MONTH_ROWS), (_WEEKDAYS, _WEEKDAYS_ZH, _WEEKDAY_ROWS)):
        for first in range(len(names)):
            after = (first + 1) % len(names)
            slots = ({"a": names[first], "b": names[after]}, {"a": names_zh[first], "b": names_zh[after]})
            items += _fill("calendar", f"{names[first]}>{names[after]}", slots, rows)
    return items


def _fact_documents(items: list[_Item], rng: random.Random) -> list[str]:
    """One document per entity with all its facts (so a model sees each entity across phrasings and languages), then
    `_MIXED_FACT_PASSES` shuffles of all fact sentences cut into documents of 3 to 6 sentences."""
    by_entity: dict[str, list[str]] = {}
    for item in items:
        by_entity.setdefault(item.entity, []).append(item.fact.filled)
    docs = []
    for sentences in by_entity.values():
        rng.shuffle(sentences)
        docs.append(" ".join(sentences))
    sentences = [item.fact.filled for item in items]
    for _ in range(_MIXED_FACT_PASSES):
        rng.shuffle(sentences)
        docs += _chunks(sentences, rng, 3, 6)
    return docs


def _pair_documents(items: list[_Item], rng: random.Random, include_everyday: bool) -> list[str]:
    """Documents of 1 to 3 sentence pairs, each an English sentence followed by its Chinese translation."""
    everyday = _everyday_pairs() if include_everyday else []
    pairs = [f"{english} {chinese}" for english, chinese in _fact_pairs(items) + everyday]
    rng.shuffle(pairs)
    return _chunks(pairs, rng, 1, 3)


def _chunks(sentences: list[str], rng: random.Random, low: int, high: int) -> list[str]:
    """`sentences` in order, cut into documents of `low` to `high` sentences (the last may be shorter)."""
    docs = []
    start = 0
    while start < len(sentences):
        size = rng.randint(low, high)
        docs.append(" ".join(sentences[start : start + size]))
        start += size
    return docs


def _fact_pairs(items: list[_Item]) -> list[tuple[str, str]]:
    """(English, Chinese) statements of the same entity and template row, where both are among `items`."""
    rows: dict[tuple[str, int], dict[str, str]] = {}
    for item in items:
        rows.setdefault((item.entity, item.row), {})[item.fact.language] = item.fact.filled
    return [(row["en"], row["zh"]) for row in rows.values() if len(row) == len(LANGUAGES)]


def _everyday_pairs() -> list[tuple[str, str]]:
    pairs = []
    for subject, subject_zh, singular in _SUBJECTS:
        pairs += _habit_pairs(subject, subject_zh, singular)
        pairs += _place_and_time_pairs(subject, subject_zh, singular)
    return pairs


def _habit_pairs(subject: str, subject_zh: str, singular: bool) -> list[tuple[str, str]]:
    """What a subject eats, drinks, reads, likes and buys, as statements, negations and questions."""
    pairs = []
    for base, third, verb_zh, objects in _VERBS:
        for obj, obj_zh in objects:
            values = {
                "S": subject,
                "s": subject if subject == "I" else subject[0].lower() + subject[1:],
                "V": third if singular else base,
                "Vb": base,
                "do": "does" if singular else "do",
                "Do": "Does" if singular else "Do",
                "O": obj,
                "S_zh": subject_zh,
                "V_zh": verb_zh,
                "O_zh": obj_zh,
            }
            pairs += [(en.format_map(values), zh.format_map(values)) for en, zh in _HABIT_ROWS]
    return pairs


def _place_and_time_pairs(subject: str, subject_zh: str, singular: bool) -> list[tuple[str, str]]:
    """Sentences that use the fact tables' capitals, countries, weekdays and months in other contexts."""
    lives, works = ("lives", "works") if singular else ("live", "work")
    pairs = []
    for country, capital, country_zh, capital_zh in _CAPITALS:
        pairs.append((f"{subject} {lives} in {capital}.", f"{subject_zh}住在{capital_zh}。"))
        pairs.append((f"{subject} visited {country} last year.", f"{subject_zh}去年去了{country_zh}。"))
    for day, day_zh in zip(_WEEKDAYS, _WEEKDAYS_ZH, strict=True):
        pairs.append((f"{subject} {works} on {day}s.", f"{subject_zh}每个{day_zh}都工作。"))
    for month, month_zh in zip(_MONTHS, _MONTHS_ZH, strict=True):
        pairs.append((f"{subject} will travel in {month}.", f"{subject_zh}{month_zh}要去旅行。"))
    return pairs


def _without_leaks(docs: list[str], excluded: set[str]) -> list[str]:
    """Drop every document that contains an excluded sentence anywhere, e.g. inside a longer sentence or the prose
    (one search of the joined text first, since usually nothing leaks)."""
    joined = "\n".join(docs)
    leaking = [text for text in excluded if text in joined]
    return [doc for doc in docs if not any(text in doc for text in leaking)]


@functools.cache
def _prose_documents() -> tuple[str, ...]:
    """English docstring paragraphs of the standard library, packed into documents, up to `_PROSE_MAX_BYTES`."""
    docs: list[str] = []
    size = 0
    for doc in _pack(_stdlib_paragraphs(), _PROSE_DOC_CHARS):
        if size >= _PROSE_MAX_BYTES:
            break
        docs.append(doc)
        size += len(doc.encode())
    return tuple(docs)


def _pack(paragraphs: Iterator[str], max_chars: int) -> Iterator[str]:
    """Consecutive paragraphs joined into documents of at most `max_chars` (a longer paragraph stands alone)."""
    current: list[str] = []
    length = 0
    for paragraph in paragraphs:
        if current and length + len(paragraph) > max_chars:
            yield " ".join(current)
            current, length = [], 0
        current.append(paragraph)
        length += len(paragraph) + 1
    if current:
        yield " ".join(current)


def _stdlib_paragraphs() -> Iterator[str]:
    """Distinct prose paragraphs of the standard library's docstrings, in sorted file order."""
    seen: set[str] = set()
    for path in _stdlib_sources(Path(sysconfig.get_paths()["stdlib"])):
        for docstring in _docstrings(path):
            for paragraph in re.split(r"\n\s*\n", docstring):
                paragraph = " ".join(paragraph.split())
                if _is_prose(paragraph) and paragraph not in seen:
                    seen.add(paragraph)
                    yield paragraph


def _stdlib_sources(root: Path) -> Iterator[Path]:
    """The standard library's .py files in sorted order, without tests, demos and installed packages."""
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = sorted(name for name in subdirectories if name not in _PROSE_SKIP_DIRS)
        yield from (Path(directory) / name for name in sorted(files) if name.endswith(".py"))


def _docstrings(path: Path) -> Iterator[str]:
    """Module, class and function docstrings of one file, parsed with `ast` (the module is never imported)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
        return
    yield from _statement_docstrings(tree)


def _statement_docstrings(node: ast.AST) -> Iterator[str]:
    """Docstrings in `node` and the statements nested in it; expressions are skipped, which halves the time of a
    full `ast.walk` (definitions only occur as statements)."""
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
        docstring = ast.get_docstring(node)
        if docstring:
            yield docstring
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.stmt, ast.excepthandler, ast.match_case)):
            yield from _statement_docstrings(child)


def _is_prose(paragraph: str) -> bool:
    """Whether a whitespace-normalised paragraph reads as English sentences rather than code, tables or lists."""
    if len(paragraph) < _PROSE_MIN_CHARS or not paragraph.isascii() or ">>>" in paragraph:
        return False
    if not (paragraph[0].isupper() and paragraph.endswith(".")):
        return False
    wordy = sum(char.isalpha() or char.isspace() for char in paragraph)
    return wordy >= 0.85 * len(paragraph)
