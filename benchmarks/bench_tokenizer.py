"""Batch-encoding throughput of `GLMTokenizer` (THUDM's GPT-2 vocabulary) against transformers' own GPT-2 tokenizer.

Both tokenizers use the same GPT-2 byte-level BPE files from THUDM's GLM-2B / GLM-10B checkpoints
(`gpt2-vocab.json`, `gpt2-merges.txt`, `--vocab-dir`, by default `../shared/fixtures/thudm-vocab` next to the
repository):

- GLM: `glm_hf.convert.vocab.gpt2_tokenizer(vocab_json, merges_txt)`, i.e. GPT-2's BPE plus GLM's nine command
  tokens (`[MASK]`, `[sMASK]`, `[gMASK]` strip the whitespace on their left) and the `[CLS] text <|endoftext|>`
  template (two extra tokens per text).
- GPT-2: `transformers.GPT2Tokenizer(vocab=..., merges=...)` built from the same files (checked to encode
  "Hello world" as [15496, 995]); it adds no special tokens and treats `[MASK]` as plain text.

Text: `--megabytes` (default 10) MB of UTF-8 text (1 MB = 10^6 bytes), generated deterministically without any
download: English prose from the docstrings of the installed Python standard library (parsed with `ast`, nothing
is imported), Chinese sentences composed pseudo-randomly (fixed `--seed`) from a built-in list of a few hundred
words and phrases with CJK punctuation, and mixed Chinese/English lines. About 5% of the lines get `[MASK]` or
`[gMASK]` blanks. Lines are 50-500 characters long. The exact text depends on the Python version's stdlib.

Measured: `tokenizer(batch)` over all lines in batches of `--batch-size` (default 1000) with the default options
(special tokens added, no padding, no truncation, no tensors), i.e. the transformers call including its Python
side (`BatchEncoding` of `input_ids` and `attention_mask`). Each tokenizer gets one untimed warm-up pass over the
whole text (which also counts its tokens), then `--repeats` (default 3) timed passes. GLM and GPT-2 take turns
batch by batch (the order alternating between batches), so that a machine slowing down or speeding up hits both
alike; the median pass time gives MB/s and tokens/s. Token counts differ between the two (GLM adds [CLS] and
<|endoftext|> and reads each blank as one token), so MB/s is the like-for-like rate; the goal is GLM >= 0.9x
GPT-2's MB/s (reported, never asserted). A second table times the Rust backends alone
(`tokenizers.Tokenizer.encode_batch` on the same batches) to separate the Rust cost from transformers' Python
conversion; `--skip-backend` leaves it out.

Correctness check: on `--check-lines` (default 5000) lines WITHOUT blanks, both tokenizers with
`add_special_tokens=False` must give the same ids (they share the BPE); count and id mismatches are printed.

Run (the default takes 1-2 minutes on 2 CPU cores, text generation included; `tokenizers` uses its own thread pool, set
`TOKENIZERS_PARALLELISM=false` or pass `--no-parallel` to measure one thread):

    python benchmarks/bench_tokenizer.py
    python benchmarks/bench_tokenizer.py --megabytes 2 --repeats 5 --batch-size 256
    python benchmarks/bench_tokenizer.py --no-parallel
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import random
import re
import statistics
import sys
import sysconfig
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import tokenizers
import transformers

from glm_hf.convert.vocab import gpt2_tokenizer

DEFAULT_VOCAB_DIR = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "fixtures", "thudm-vocab")
)
GOAL = 0.9  # GLM MB/s >= GOAL * GPT-2 MB/s

# A few hundred Chinese words and phrases (nouns, verbs, adjectives, adverbs, connectives, idioms, some with
# Latin letters or digits), combined pseudo-randomly into sentences.
CHINESE_WORDS = """
我们 你们 他们 大家 自己 这个 那个 一些 所有 每个 这种 其中 之间 以及 或者 但是 因为 所以 如果 虽然
然而 而且 并且 不过 于是 因此 同时 然后 最后 首先 其次 另外 总之 例如 比如 甚至 尤其 特别 已经 正在
将要 可能 应该 必须 需要 能够 可以 愿意 希望 认为 觉得 知道 发现 表示 指出 强调 提出 讨论 研究
分析 学习 工作 生活 发展 建设 改革 开放 创新 合作 交流 管理 服务 保护 提高 增加 减少 改善 推动 促进
支持 参加 组织 举办 完成 实现 解决 处理 提供 使用 利用 建立 形成 获得 取得 保持 继续 开始 结束 出现
成为 进行 加强 坚持 落实 关注 重视 了解 掌握 理解 说明 介绍 报道 调查 统计 测试 训练 评估 部署
优化 设计 编写 运行 下载 上传 安装 配置 调试 修复 更新 发布 记录 保存 读取 计算 预测 生成 翻译
经济 社会 文化 教育 科技 技术 科学 历史 政治 法律 环境 资源 能源 市场 企业 公司 政府 国家 城市
农村 地区 世界 中国 北京 上海 广州 深圳 杭州 成都 武汉 西安 南京 天津 长江 黄河 泰山 西湖 故宫
人民 群众 学生 老师 医生 工程师 科学家 记者 作者 读者 用户 客户 朋友 家人 孩子 父母 老人 年轻人
问题 方法 方面 方式 过程 结果 目标 任务 计划 政策 制度 标准 质量 效率 水平 能力 作用 影响 意义
价值 关系 条件 基础 情况 特点 原因 机会 挑战 风险 优势 趋势 前景 未来 现在 过去 今天 明天 昨天
时间 空间 速度 数据 信息 网络 系统 平台 软件 硬件 程序 代码 算法 模型 参数 语言 文字 句子 词语
文章 书籍 图书馆 博物馆 学校 大学 医院 银行 商店 餐厅 公园 机场 火车站 地铁 高铁 汽车 飞机
春天 夏天 秋天 冬天 早上 中午 晚上 周末 节日 春节 中秋节 端午节 天气 阳光 雨水 风景 山水 森林 海洋
重要 主要 基本 全面 重大 明显 复杂 简单 困难 容易 清楚 准确 有效 积极 稳定 持续 快速 缓慢 安全
美丽 干净 热闹 安静 温暖 寒冷 新鲜 传统 现代 先进 丰富 独特 普通 广泛 深入 具体 合理 公平 开放
非常 十分 比较 更加 越来越 一直 始终 经常 往往 通常 逐渐 立即 终于 仍然 依然 几乎 完全 大约 至少
的 了 着 过 在 和 与 对 从 向 把 被 给 让 为 将 于 就 都 也 还 又 再 才 很 最 更 不 没有
一个 两个 三种 四位 五年 十分钟 一百多 几千 上万 第一 第二 许多 大量 少数 多数 部分 整体 全部
人工智能 机器学习 深度学习 自然语言处理 神经网络 大语言模型 预训练 微调 数据集 开源社区 云计算 大数据
可持续发展 高质量发展 乡村振兴 数字经济 绿色能源 碳中和 新能源汽车 互联网 移动支付 电子商务 短视频
实事求是 与时俱进 百花齐放 日新月异 循序渐进 精益求精 锲而不舍 举一反三 温故知新 水滴石穿 一举两得
众所周知 毫无疑问 由此可见 换句话说 一方面 另一方面 总的来说 在这种情况下 随着时间的推移 在此基础上
Python语言 GPU服务器 API接口 CPU核心 Transformer模型 GLM模型 HTTP请求 JSON格式 Linux系统 GitHub仓库
2023年 2024年 3月 15日 10% 3.5% 100万 第3章 5G网络 4K视频
""".split()

ENGLISH_IN_CHINESE = ["AI", "Python", "GPU", "Hugging Face", "tokenizer", "BPE", "Transformer", "OK", "CEO", "App"]
SENTENCE_ENDS = ["。"] * 8 + ["！", "？", "；", "……"]
INNER_PUNCT = ["，"] * 6 + ["、", "：", "；"]
BLANKS = ("[MASK]", "[gMASK]")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--vocab-dir",
        default=DEFAULT_VOCAB_DIR,
        help=f"folder with gpt2-vocab.json and gpt2-merges.txt (default {DEFAULT_VOCAB_DIR})",
    )
    parser.add_argument("--megabytes", type=float, default=10.0, help="MB (10^6 bytes) of UTF-8 text (default 10)")
    parser.add_argument("--batch-size", type=int, default=1000, help="texts per tokenizer(batch) call (default 1000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per tokenizer, median shown (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the text generator (default 0)")
    parser.add_argument(
        "--check-lines", type=int, default=5000, help="blank-free lines for the token check, 0 = all (default 5000)"
    )
    parser.add_argument("--blank-rate", type=float, default=0.05, help="share of lines with blanks (default 0.05)")
    parser.add_argument("--no-parallel", action="store_true", help="set TOKENIZERS_PARALLELISM=false (one thread)")
    parser.add_argument("--skip-backend", action="store_true", help="skip the Rust-backend-only table")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------------------------
# Text


def stdlib_paragraphs() -> list[str]:
    """Paragraphs of the docstrings of the standard library's .py files (sorted walk, `ast`, no imports), each
    with its whitespace collapsed, at least 40 characters long."""
    root = sysconfig.get_paths()["stdlib"]
    skip = {"site-packages", "test", "tests", "idlelib", "__pycache__", "lib2to3", "turtledemo", "dist-packages"}
    paragraphs = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        for filename in sorted(filenames):
            if not filename.endswith(".py"):
                continue
            try:
                with open(os.path.join(dirpath, filename), encoding="utf-8") as handle:
                    tree = ast.parse(handle.read())
            except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
                continue
            for node in ast.walk(tree):
                if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                doc = ast.get_docstring(node)
                if not doc:
                    continue
                for paragraph in re.split(r"\n\s*\n", doc):
                    paragraph = " ".join(paragraph.split())
                    if len(paragraph) >= 40 and paragraph.isascii():
                        paragraphs.append(paragraph)
    if not paragraphs:
        raise RuntimeError(f"No docstrings found under {root}")
    return paragraphs


def fit(text: str, length: int) -> str:
    """Cuts `text` to at most `length` characters, after a space or a CJK sentence end if one lies in the last
    quarter (and past character 50), else exactly at `length`."""
    if len(text) <= length:
        return text
    cut = max(text.rfind(" ", 0, length), *(text.rfind(end, 0, length) + 1 for end in "。！？；"))
    return text[: cut if cut >= max(50, length * 3 // 4) else length].rstrip()


def chinese_sentence(rng: random.Random, with_english: bool) -> str:
    clauses = []
    for _ in range(rng.randint(1, 4)):
        words = rng.choices(CHINESE_WORDS, k=rng.randint(3, 9))
        if with_english and rng.random() < 0.4:
            words.insert(rng.randrange(len(words) + 1), rng.choice(ENGLISH_IN_CHINESE))
        clause = "".join(words)
        roll = rng.random()
        if roll < 0.06:
            clause = f"“{clause}”"
        elif roll < 0.09:
            clause = f"《{clause[:8]}》{clause[8:]}"
        elif roll < 0.11:
            clause = f"{clause}（{rng.choice(CHINESE_WORDS)}）"
        clauses.append(clause)
    text = clauses[0]
    for clause in clauses[1:]:
        text += rng.choice(INNER_PUNCT) + clause
    return text + rng.choice(SENTENCE_ENDS)


def english_line(rng: random.Random, paragraphs: list[str], length: int) -> str:
    text = rng.choice(paragraphs)
    while len(text) < length:
        text += " " + rng.choice(paragraphs)
    return fit(text, length)


def chinese_line(rng: random.Random, length: int, with_english: bool) -> str:
    text = ""
    while len(text) < length:
        text += chinese_sentence(rng, with_english)
    return fit(text, length)


def mixed_line(rng: random.Random, paragraphs: list[str], length: int) -> str:
    parts, total = [], 0
    while total < length:
        if rng.random() < 0.5:
            piece = english_line(rng, paragraphs, rng.randint(40, 160))
        else:
            piece = chinese_sentence(rng, with_english=True)
        parts.append(piece)
        total += len(piece) + 1
    return fit(" ".join(parts), length)


def add_blanks(rng: random.Random, text: str) -> str:
    """Replaces one to three words (or a few Chinese characters) by blanks, or appends a `[gMASK]`."""
    if rng.random() < 0.3:
        return f"{text} [gMASK]"
    for _ in range(rng.randint(1, 3)):
        blank = rng.choice(BLANKS)
        words = list(re.finditer(r" [^ ]{1,20}(?= )", text))
        if words:  # English-ish: swap a word for " [MASK]" (GLM strips the space on its left)
            word = rng.choice(words)
            text = f"{text[: word.start()]} {blank}{text[word.end() :]}"
        else:  # Chinese: swap 2-6 characters for the blank, no spaces around it
            start = rng.randrange(max(1, len(text) - 6))
            text = text[:start] + blank + text[start + rng.randint(2, 6) :]
    return text


def make_lines(megabytes: float, seed: int, blank_rate: float) -> tuple[list[str], list[bool], dict[str, int]]:
    """Lines of 50-500 characters until `megabytes` MB of UTF-8; returns the lines, whether each has blanks, and
    how many lines of each kind there are."""
    paragraphs = stdlib_paragraphs()
    rng = random.Random(seed)
    target = int(megabytes * 1e6)
    lines, has_blank = [], []
    kinds = {"english": 0, "chinese": 0, "mixed": 0}
    size = 0
    while size < target:
        length = int(round(50 * 10 ** rng.uniform(0, 1)))  # 50-500 characters, log-uniform
        roll = rng.random()
        if roll < 0.5:
            kind, text = "english", english_line(rng, paragraphs, length)
        elif roll < 0.85:
            kind, text = "chinese", chinese_line(rng, length, with_english=rng.random() < 0.3)
        else:
            kind, text = "mixed", mixed_line(rng, paragraphs, length)
        blank = rng.random() < blank_rate
        if blank:
            text = add_blanks(rng, text)
        kinds[kind] += 1
        lines.append(text)
        has_blank.append(blank)
        size += len(text.encode("utf-8"))
    return lines, has_blank, kinds


# --------------------------------------------------------------------------------------------------------------
# Tokenizers


def load_tokenizers(vocab_dir: str):
    vocab_json = os.path.join(vocab_dir, "gpt2-vocab.json")
    merges_txt = os.path.join(vocab_dir, "gpt2-merges.txt")
    for path in (vocab_json, merges_txt):
        if not os.path.isfile(path):
            sys.exit(f"error: {path} not found (pass --vocab-dir)")
    glm = gpt2_tokenizer(vocab_json, merges_txt)
    with open(vocab_json, encoding="utf-8") as handle:
        vocab = json.load(handle)
    with open(merges_txt, encoding="utf-8") as handle:
        merges_lines = handle.read().split("\n")
    # In transformers 5, GPT2Tokenizer(vocab_file=..., merges_file=...) silently builds an empty vocabulary, so
    # pass the contents; merges.txt starts with a "#version" line.
    gpt2 = transformers.GPT2Tokenizer(vocab=vocab, merges=[tuple(line.split()) for line in merges_lines[1:] if line])
    for name, tok, expected in (("GPT-2", gpt2, [15496, 995]), ("GLM", glm, [50259, 15496, 995, 50256])):
        got = tok("Hello world")["input_ids"]
        if got != expected:
            sys.exit(f"error: the {name} tokenizer encodes 'Hello world' as {got}, expected {expected}")
    return glm, gpt2


def batches(lines: list[str], size: int) -> list[list[str]]:
    return [lines[i : i + size] for i in range(0, len(lines), size)]


def count_tokens(tokenizer, chunks: list[list[str]]) -> int:
    return sum(sum(map(len, tokenizer(chunk)["input_ids"])) for chunk in chunks)


def count_backend_tokens(tokenizer, chunks: list[list[str]]) -> int:
    backend = tokenizer._tokenizer
    return sum(sum(len(e.ids) for e in backend.encode_batch(chunk)) for chunk in chunks)


def call_encoder(tokenizer) -> Callable[[list[str]], object]:
    return lambda chunk: tokenizer(chunk)


def backend_encoder(tokenizer) -> Callable[[list[str]], object]:
    backend = tokenizer._tokenizer
    return lambda chunk: backend.encode_batch(chunk)


def time_interleaved(encoders: dict[str, Callable], chunks: list[list[str]], repeats: int) -> dict[str, list[float]]:
    """Seconds per pass over all chunks for each encoder, `repeats` passes. The encoders take turns batch by batch
    (the order alternates between batches), so a slowdown of the machine hits both alike."""
    times: dict[str, list[float]] = {name: [] for name in encoders}
    names = list(encoders)
    for _ in range(repeats):
        spent = dict.fromkeys(names, 0.0)
        for i, chunk in enumerate(chunks):
            for name in names if i % 2 == 0 else names[::-1]:
                start = time.perf_counter()
                encoders[name](chunk)
                spent[name] += time.perf_counter() - start
        for name in names:
            times[name].append(spent[name])
    return times


def print_table(title: str, times: dict[str, list[float]], tokens: dict[str, int], megabytes: float) -> float:
    print(f"\n{title}")
    header = f"{'tokenizer':<22} {'MB/s':>8} {'tokens/s':>12} {'tokens':>11} {'median s':>9}  runs (s)"
    print(header)
    print("-" * len(header))
    rates = {}
    for name, runs in times.items():
        median = statistics.median(runs)
        rates[name] = megabytes / median
        runs_text = " ".join(f"{t:.3f}" for t in runs)
        print(
            f"{name:<22} {rates[name]:>8.2f} {tokens[name] / median:>12,.0f} {tokens[name]:>11,} {median:>9.3f}  "
            f"{runs_text}"
        )
    glm, gpt2 = list(rates)
    ratio = rates[glm] / rates[gpt2]
    verdict = "met" if ratio >= GOAL else "NOT met"
    print(f"{'ratio GLM / GPT-2':<22} {ratio:>7.3f}x  (MB/s; goal >= {GOAL}x: {verdict})")
    return ratio


def check_tokens(glm, gpt2, lines: list[str], has_blank: list[bool], sample: int, seed: int) -> None:
    clean = [line for line, blank in zip(lines, has_blank, strict=True) if not blank]
    if 0 < sample < len(clean):
        clean = random.Random(seed + 1).sample(clean, sample)
    count_mismatch = id_mismatch = glm_total = gpt2_total = 0
    first = None
    for chunk in batches(clean, 1000):
        ids_glm = glm(chunk, add_special_tokens=False)["input_ids"]
        ids_gpt2 = gpt2(chunk, add_special_tokens=False)["input_ids"]
        for text, a, b in zip(chunk, ids_glm, ids_gpt2, strict=True):
            glm_total += len(a)
            gpt2_total += len(b)
            count_mismatch += len(a) != len(b)
            id_mismatch += a != b
            if a != b and first is None:
                first = text
    print(f"\nToken check on {len(clean):,} lines without blanks (add_special_tokens=False):")
    print(f"  tokens: GLM {glm_total:,}, GPT-2 {gpt2_total:,}")
    print(f"  lines with a different token count: {count_mismatch}; lines with different ids: {id_mismatch}")
    if first is not None:
        print(f"  first differing line: {first[:120]!r}")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.no_parallel:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    started = time.perf_counter()

    glm, gpt2 = load_tokenizers(args.vocab_dir)
    lines, has_blank, kinds = make_lines(args.megabytes, args.seed, args.blank_rate)
    size = sum(len(line.encode("utf-8")) for line in lines)
    megabytes = size / 1e6
    chars = sum(map(len, lines))
    cjk = sum(1 for line in lines for ch in line if "\u4e00" <= ch <= "\u9fff")
    chunks = batches(lines, args.batch_size)
    generated = time.perf_counter() - started

    print("GLMTokenizer (glm_hf.convert.vocab.gpt2_tokenizer) vs transformers.GPT2Tokenizer, same GPT-2 vocab")
    print(
        f"python {platform.python_version()}, transformers {transformers.__version__}, "
        f"tokenizers {tokenizers.__version__}, {os.cpu_count()} CPUs, "
        f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', '(unset: parallel)')}"
    )
    print(
        f"text: {megabytes:.2f} MB UTF-8, {chars:,} characters ({cjk / chars:.0%} CJK ideographs), "
        f"{len(lines):,} lines (english {kinds['english']:,}, chinese {kinds['chinese']:,}, "
        f"mixed {kinds['mixed']:,}; {sum(has_blank):,} with blanks), "
        f"{chars / len(lines):.0f} chars/line; {len(chunks)} batches of {args.batch_size}; "
        f"tokenizers loaded and text generated in {generated:.1f} s"
    )

    check_tokens(glm, gpt2, lines, has_blank, args.check_lines, args.seed)

    tokenizers_under_test = {"GLM (glm_hf)": glm, "GPT-2 (transformers)": gpt2}
    # Warm-up: one untimed pass each, which also counts the tokens.
    tokens = {name: count_tokens(tok, chunks) for name, tok in tokenizers_under_test.items()}
    encoders = {name: call_encoder(tok) for name, tok in tokenizers_under_test.items()}
    times = time_interleaved(encoders, chunks, args.repeats)
    print_table(
        f"tokenizer(batch): median of {args.repeats} passes over {megabytes:.2f} MB, batch {args.batch_size}",
        times,
        tokens,
        megabytes,
    )

    if not args.skip_backend:
        backend_tokens = {name: count_backend_tokens(tok, chunks) for name, tok in tokenizers_under_test.items()}
        backend_encoders = {name: backend_encoder(tok) for name, tok in tokenizers_under_test.items()}
        backend_times = time_interleaved(backend_encoders, chunks, args.repeats)
        print_table(
            "Rust backend only: tokenizers.Tokenizer.encode_batch(batch) on the same batches",
            backend_times,
            backend_tokens,
            megabytes,
        )

    print(f"\ntotal runtime {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
