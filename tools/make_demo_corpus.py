"""Regenerate the demo corpus shipped with SAGE (sage_plugins/demo/data/sage_docs.jsonl).

The corpus is SAGE's own documentation: the Markdown pages (split into passages at
paragraphs under their headings) and the docstrings of the sage_core and
sage_plugins modules, classes and functions. Run from the repository root:

    python tools/make_demo_corpus.py [--docs DIR ...] [--out PATH]
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIN_WORDS = 12
MAX_WORDS = 140


def _clean(text: str) -> str:
    return " ".join(text.split())


def _split_long(text: str) -> list[str]:
    words = text.split()
    if len(words) <= MAX_WORDS:
        return [text]
    parts, current = [], []
    for sentence in re.split(r"(?<=[.;:])\s+", text):
        if (
            current
            and len(" ".join(current).split()) + len(sentence.split()) > MAX_WORDS
        ):
            parts.append(" ".join(current))
            current = []
        current.append(sentence)
    if current:
        parts.append(" ".join(current))
    return parts


def markdown_passages(path: Path, source: str) -> list[dict[str, object]]:
    """Paragraphs (and single list items) of a Markdown file, with their heading."""
    out = []
    heading = path.stem
    in_code = False
    block: list[str] = []

    def flush() -> None:
        text = _clean(" ".join(block))
        block.clear()
        if len(text.split()) >= MIN_WORDS:
            for part in _split_long(text):
                out.append({"text": part, "source": source, "section": heading})

    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            flush()
            in_code = not in_code
            continue
        if in_code:
            continue
        if line.startswith("#"):
            flush()
            heading = line.lstrip("#").strip()
        elif not line.strip():
            flush()
        elif re.match(r"^\s*([-*]|\d+\.)\s", line):
            flush()  # each list item is its own passage
            block.append(re.sub(r"^\s*([-*]|\d+\.)\s+", "", line))
        else:
            block.append(line.strip())
    flush()
    return out


def _tracked(package: Path) -> list[Path]:
    """The package's Python files that git tracks (all of them outside a checkout)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--", f"{package.name}/*.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return sorted(package.rglob("*.py"))
    return sorted(ROOT / name for name in listed)


def docstring_passages(package: Path) -> list[dict[str, object]]:
    """Docstrings (first paragraphs) of modules, classes and public functions."""
    out = []
    for path in _tracked(package):
        rel = path.relative_to(ROOT).as_posix()
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = [("module " + rel, tree)] + [
            (f"{type(n).__name__.replace('Def', '').lower()} {n.name}", n)
            for n in ast.walk(tree)
            if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
            and not n.name.startswith("_")
        ]
        for label, node in nodes:
            doc = ast.get_docstring(node)
            if not doc:
                continue
            doc = doc.split("\n\n::")[0].split("Args:")[0].split("Raises:")[0]
            for para in re.split(r"\n\s*\n", doc):
                text = _clean(para.replace("``", "`"))
                if len(text.split()) >= MIN_WORDS and not text.startswith(">>>"):
                    for part in _split_long(text):
                        out.append({"text": part, "source": rel, "section": label})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", nargs="*", default=["README.md", "docs"])
    parser.add_argument(
        "--out", default=str(ROOT / "sage_plugins/demo/data/sage_docs.jsonl")
    )
    args = parser.parse_args()
    passages = []
    for entry in args.docs:
        path = Path(entry)
        files = sorted(path.rglob("*.md")) if path.is_dir() else [path]
        for file in files:
            passages += markdown_passages(file, file.name)
    for package in ("sage_core", "sage_plugins"):
        passages += docstring_passages(ROOT / package)
    seen = set()
    with open(args.out, "w", encoding="utf-8") as f:
        n = 0
        for p in passages:
            if p["text"] in seen:
                continue
            seen.add(p["text"])
            n += 1
            record = {"id": f"p{n:04d}", **p}
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"{n} passages -> {args.out}")


if __name__ == "__main__":
    main()
