"""Relevance labels for the 1,000 WordNet word queries, by the rules of shared/data/README.md ("Relevance
labels"), from Debian's wordnet-base 1:3.0-37 (`apt-get install wordnet-base`, or its .deb unpacked).

A word query w taken from held-out synset S: base synsets linked to S by a counted pointer (either way;
grade 2 or 1 as in the README) and base synsets with w as a lemma (grade 1 at least); antonyms are not
relevant. The same code rebuilds the shipped gloss labels exactly (`--check`), which is how it is verified.

    python bench/wordnet_labels.py [--wordnet /usr/share/wordnet] [--check]
writes bench/data/word_relevance.jsonl: {"id": query, "relevant": [[base_row, grade], ...]} per line.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
from pathlib import Path

from common import DATA

GRADE = {**dict.fromkeys(("@", "@i", "~", "~i", "&", "+", "$", "^"), 2),
         **dict.fromkeys(("#m", "#p", "#s", "%m", "%p", "%s", "=", "*", ">", "\\"), 1)}
OUT = Path(__file__).resolve().parent / "data" / "word_relevance.jsonl"
FOLDER = DATA / "wordnet_minilm"


def synset(offset: str, pos: str) -> str:
    """A synset key: adjective satellites ('s') share the adjectives' file and pointers name them 'a'."""
    return f"{offset}-{'a' if pos == 's' else pos}"


def read_wordnet(folder: Path) -> tuple[dict[str, set[str]], dict[str, dict[str, int]], dict[str, set[str]]]:
    """Lemmas (lower case) per synset, graded links per synset (both directions) and antonyms per synset."""
    lemmas: dict[str, set[str]] = {}
    links: dict[str, dict[str, int]] = collections.defaultdict(dict)
    antonyms: dict[str, set[str]] = collections.defaultdict(set)
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (folder / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  "):
                continue
            f = line.split("|")[0].split()
            sid, n = synset(f[0], f[2]), int(f[3], 16)
            lemmas[sid] = {re.sub(r"\((a|p|ip)\)$", "", w).replace("_", " ").lower() for w in f[4 : 4 + 2 * n : 2]}
            at = 5 + 2 * n
            for i in range(int(f[at - 1])):
                symbol, target = f[at + 4 * i], synset(f[at + 4 * i + 1], f[at + 4 * i + 2])
                if symbol == "!":
                    antonyms[sid].add(target)
                    antonyms[target].add(sid)
                for a, b in ((sid, target), (target, sid)):
                    if GRADE.get(symbol, 0) > links[a].get(b, 0):
                        links[a][b] = GRADE[symbol]
    return lemmas, links, antonyms


def read_jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (FOLDER / name).read_text().splitlines()]


def labels(wordnet: Path, word_queries: bool) -> list[dict[int, int]]:
    """Per query: {base row: grade}."""
    lemmas, links, antonyms = read_wordnet(wordnet)
    base = [synset(*r["synset"].split("-")) for r in read_jsonl("base.jsonl")]
    row = {s: i for i, s in enumerate(base)}
    by_lemma: dict[str, set[int]] = collections.defaultdict(set)
    for i, s in enumerate(base):
        for lemma in lemmas[s]:
            by_lemma[lemma].add(i)
    out = []
    for q in read_jsonl("word_queries.jsonl" if word_queries else "queries.jsonl"):
        sid = synset(*q["synset"].split("-"))
        relevant = {row[t]: g for t, g in links[sid].items() if t in row}
        for lemma in ({q["text"].lower()} if word_queries else lemmas[sid]):
            for i in by_lemma[lemma]:
                relevant.setdefault(i, 1)
        for t in antonyms[sid]:
            relevant.pop(row.get(t, -1), None)
        out.append(relevant)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    ap.add_argument("--check", action="store_true", help="rebuild the shipped gloss labels and compare")
    args = ap.parse_args()
    if args.check:
        shipped = [{r: g for r, g in q["relevant"]} for q in read_jsonl("relevance.jsonl")]
        same = sum(a == b for a, b in zip(labels(args.wordnet, False), shipped))
        print(f"gloss labels rebuilt: {same} of {len(shipped)} queries identical")
    word = labels(args.wordnet, True)
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text("".join(json.dumps({"id": i, "relevant": sorted(r.items())}, separators=(",", ":")) + "\n"
                           for i, r in enumerate(word)))
    print(f"{OUT}: {sum(map(len, word))} (query, row) pairs, {sum(map(bool, word))} queries with a relevant row")


if __name__ == "__main__":
    main()
