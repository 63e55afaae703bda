#!/usr/bin/env python3
"""Checks the user guide in docs/ (an mdBook).

    python3 scripts/check_guide.py [--no-build]

1. Builds the book with `mdbook build docs`: the mdbook in
   $MAMEY_TOOLS/bin (default ~/.cache/mamey-tools/bin, where
   `scripts/services.sh tools` installs it), else the one on PATH.
2. Checks every internal link of the built HTML (docs/book/): each `href`
   and `src` that is not an absolute URL must name a file of the book, and
   each `#anchor` an element id of that file. mdBook's own pages (print.html,
   toc.html, 404.html, and index.html, a copy of the first chapter) are
   skipped: they repeat the chapters' links.
3. Checks that every key of every configuration section is documented: the
   section structs are the `#[derive(... Deserialize ...)]` structs with an
   `impl ConfigSection for ...` in mamey-*/src, read with regular
   expressions; their keys are the `pub` fields, and the fields of the
   structs those fields hold (`Option<T>`, `Vec<T>`, maps of `T`), to any
   depth, with serde's `rename`, `rename_all`, `flatten` and `skip`
   applied. Each key must appear in its chapter (SECTION_PAGES below) as a
   word inside inline code or a fenced code block. A struct shared by two
   sections on different chapters (`JwtConfig` in `http.jwt` and `grpc.jwt`)
   is checked in full on the chapter of the first section in SECTION_PAGES
   that holds it; elsewhere only the key that holds it (`jwt`) must appear.

4. Checks that every Rust block of the guide comes from code that compiles
   (the crate examples/guide, or another example): a fenced block whose
   info string starts with `rust` (```` ```rust ````, ```` ```rust,ignore ````)
   in docs/src/*.md may hold only `{{#include PATH}}` and
   `{{#rustdoc_include PATH}}` lines (and blank lines). A block with
   anything else is pasted code and is reported as `page:line` (the line of
   its opening fence). Each include's file, relative to the page, must
   exist, and for `PATH:name` its `ANCHOR: name` and `ANCHOR_END: name`
   comments must both be in that file: mdbook renders an empty block for a
   missing anchor, without a warning. Line ranges (`PATH:10:20`) are only
   checked for the file. Other fences (toml, sh, json, text) are not
   looked at.

Known gaps are listed in scripts/guide-missing-keys.txt, one a line:
`page:key` for a key (`http.md:http.limits.shedding.buckets`),
`page:link:href` for a link (`http.md:link:core.html#health`),
`page:rust-block:LINE` for a pasted Rust block whose fence opens on line
LINE (`persistence.md:rust-block:635`) and `page:include:SPEC` for an
include that does not resolve; a line
starting with `#` is a comment (`#` elsewhere is part of an anchor). Listed
items are reported as allowed; an entry that no longer matches a problem is
reported so that it can be removed, without failing. `--list` prints every
key checked, with its chapter.

Exits 1 when any problem is not allowed, 2 when the book does not build.
"""

from __future__ import annotations

import argparse
import html.parser
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SRC = DOCS / "src"
BOOK = DOCS / "book"
ALLOW_FILE = ROOT / "scripts" / "guide-missing-keys.txt"

# Section key -> chapter. Order matters for structs shared between sections
# (see the module docs): the first section holding a struct owns it.
SECTION_PAGES: dict[str, str] = {
    "app": "core.md",
    "shutdown": "core.md",
    "health": "core.md",
    "http": "http.md",
    "http_client": "http.md",
    "grpc": "grpc.md",
    "messaging": "messaging.md",
    "rabbitmq": "messaging.md",
    "postgres": "persistence.md",
    "sqlite": "persistence.md",
    "redis": "persistence.md",
    "mongo": "persistence.md",
    "discovery": "discovery.md",
    "secrets": "secrets.md",
    "observability": "observability.md",
    "logging": "observability.md",
    "tracing": "observability.md",
    "metrics": "observability.md",
}

# mdBook's generated pages, which repeat the chapters' content (index.html
# is a copy of the first chapter).
SKIPPED_HTML = {"print.html", "toc.html", "404.html", "index.html"}


# ---------------------------------------------------------------- mdbook --


def find_mdbook() -> str | None:
    tools = Path(os.environ.get("MAMEY_TOOLS", Path.home() / ".cache" / "mamey-tools"))
    candidate = tools / "bin" / "mdbook"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("mdbook")


def build_book() -> bool:
    mdbook = find_mdbook()
    if mdbook is None:
        print(
            "guide: mdbook not found in $MAMEY_TOOLS/bin or on PATH; "
            "install it with `bash scripts/services.sh tools`",
            file=sys.stderr,
        )
        return False
    version = subprocess.run([mdbook, "--version"], capture_output=True, text=True)
    print(f"guide: building docs/ with {version.stdout.strip() or mdbook}")
    result = subprocess.run([mdbook, "build", str(DOCS)], capture_output=True, text=True)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        print(output, file=sys.stderr)
        print("guide: mdbook build failed", file=sys.stderr)
        return False
    # mdBook reports what it could not resolve (a missing chapter file, an
    # include) as warnings or errors; show them, the link check decides.
    for line in output.splitlines():
        if re.search(r"\b(WARN|ERROR)\b", line):
            print(f"guide: mdbook: {line.strip()}")
    return True


# ------------------------------------------------------------------ links --


class _Scanner(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.refs: list[tuple[int, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name == "id" or (name == "name" and tag == "a"):
                self.ids.add(value)
            elif name in ("href", "src"):
                self.refs.append((self.getpos()[0], value))


def scan(path: Path) -> _Scanner:
    scanner = _Scanner()
    scanner.feed(path.read_text(encoding="utf-8", errors="replace"))
    return scanner


def page_of(html_file: Path) -> str:
    """The chapter an HTML file was built from (`core.html` -> `core.md`)."""
    return html_file.relative_to(BOOK).with_suffix(".md").as_posix()


@dataclass(frozen=True)
class Problem:
    page: str
    item: str  # the allow-list item: a key, or `link:href`
    message: str


def check_links() -> list[Problem]:
    problems: list[Problem] = []
    cache: dict[Path, _Scanner] = {}

    def scanned(path: Path) -> _Scanner:
        if path not in cache:
            cache[path] = scan(path)
        return cache[path]

    for html_file in sorted(BOOK.rglob("*.html")):
        if html_file.relative_to(BOOK).as_posix() in SKIPPED_HTML:
            continue
        page = page_of(html_file)
        for line, ref in scanned(html_file).refs:
            parts = urlsplit(ref)
            if parts.scheme or ref.startswith("//"):
                continue  # absolute: http(s), mailto, data
            target = html_file
            if parts.path:
                target = (html_file.parent / unquote(parts.path)).resolve()
                if target.is_dir():
                    target = target / "index.html"
                try:
                    target.relative_to(BOOK.resolve())
                except ValueError:
                    problems.append(
                        Problem(page, f"link:{ref}", f"link `{ref}` leaves the book (line {line} of {html_file.name})")
                    )
                    continue
                if not target.is_file():
                    problems.append(
                        Problem(page, f"link:{ref}", f"link `{ref}`: no such file in the book (line {line} of {html_file.name})")
                    )
                    continue
            anchor = unquote(parts.fragment)
            if anchor and target.suffix == ".html" and anchor not in scanned(target).ids:
                problems.append(
                    Problem(
                        page,
                        f"link:{ref}",
                        f"link `{ref}`: no element with id `{anchor}` in {target.name} "
                        f"(line {line} of {html_file.name})",
                    )
                )
    return problems


# ------------------------------------------------------------------- keys --


@dataclass
class Field:
    name: str  # the Rust name
    key: str  # the configuration key (after serde renames)
    type: str
    flatten: bool
    line: int


@dataclass
class Struct:
    name: str
    crate: str
    file: Path
    line: int
    fields: list[Field] = field(default_factory=list)


def strip_comments(text: str) -> str:
    """Blanks out comments (keeping line breaks and string literals)."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append(text[i:end])
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i : j + 1])
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{..}'); otherwise a lifetime.
            m = re.match(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            if m:
                out.append(m.group(0))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def matching(text: str, open_at: int, open_ch: str = "{", close_ch: str = "}") -> int:
    """Index of the bracket closing the one at `open_at` (strings skipped)."""
    depth, i = 0, open_at
    while i < len(text):
        c = text[i]
        if c == '"':
            i += 1
            while i < len(text) and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == open_ch:
            depth += 1
        elif c == close_ch:
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return len(text)


def split_top_level(body: str) -> list[tuple[int, str]]:
    """Splits a struct body at commas outside brackets; keeps offsets."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(body):
        c = body[i]
        if c == '"':
            i += 1
            while i < len(body) and body[i] != '"':
                i += 2 if body[i] == "\\" else 1
        elif c in "<([{":
            depth += 1
        elif c in ">)]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append((start, body[start:i]))
            start = i + 1
        i += 1
    parts.append((start, body[start:]))
    return [(o, p) for o, p in parts if p.strip()]


def rename(name: str, rule: str | None) -> str:
    if not rule:
        return name
    words = name.split("_")
    if rule == "lowercase":
        return name.lower()
    if rule == "UPPERCASE":
        return name.upper()
    if rule == "camelCase":
        return words[0] + "".join(w.capitalize() for w in words[1:])
    if rule == "PascalCase":
        return "".join(w.capitalize() for w in words)
    if rule == "kebab-case":
        return "-".join(words)
    if rule == "SCREAMING_SNAKE_CASE":
        return name.upper()
    if rule == "SCREAMING-KEBAB-CASE":
        return "-".join(words).upper()
    return name


STRUCT_RE = re.compile(r"\bstruct\s+([A-Za-z_]\w*)\s*(<[^{;]*?>)?\s*(where[^{;]*)?\{")
SECTION_RE = re.compile(
    r"\bimpl\s+(?:[\w:]+::)?ConfigSection\s+for\s+([A-Za-z_]\w*)\s*\{[^}]*?"
    r"const\s+KEY\s*:\s*&\s*(?:'static\s+)?str\s*=\s*\"([^\"]+)\""
)
ATTR_RE = re.compile(r"#\s*\[(.*?)\]\s*", re.S)


def parse_sources() -> tuple[dict[str, list[Struct]], list[tuple[str, str, str, Path, int]]]:
    """Deserialize structs by name, and (key, struct, crate, file, line) of each section."""
    structs: dict[str, list[Struct]] = {}
    sections: list[tuple[str, str, str, Path, int]] = []
    for crate_dir in sorted(ROOT.glob("mamey-*")):
        for path in sorted((crate_dir / "src").rglob("*.rs")):
            text = strip_comments(path.read_text(encoding="utf-8"))
            for m in SECTION_RE.finditer(text):
                sections.append((m.group(2), m.group(1), crate_dir.name, path, text.count("\n", 0, m.start()) + 1))
            for m in STRUCT_RE.finditer(text):
                # The attributes right before the struct (and its visibility).
                head_end = m.start()
                head_start = max(text.rfind("}", 0, head_end), text.rfind(";", 0, head_end)) + 1
                head = text[head_start:head_end]
                attrs = [a.group(1) for a in ATTR_RE.finditer(head)]
                derive = " ".join(a for a in attrs if a.strip().startswith("derive"))
                if not re.search(r"\bDeserialize\b", derive):
                    continue
                rule = None
                for a in attrs:
                    r = re.search(r'\brename_all\s*=\s*"([^"]+)"', a)
                    if a.strip().startswith("serde") and r:
                        rule = r.group(1)
                open_at = m.end() - 1
                body = text[open_at + 1 : matching(text, open_at)]
                struct = Struct(m.group(1), crate_dir.name, path, text.count("\n", 0, m.start()) + 1)
                for offset, part in split_top_level(body):
                    fattrs = [a.group(1) for a in ATTR_RE.finditer(part)]
                    rest = ATTR_RE.sub(" ", part).strip()
                    fm = re.match(r"pub(?:\s*\([^)]*\))?\s+(?:r#)?([A-Za-z_]\w*)\s*:\s*(.+)$", rest, re.S)
                    if not fm:
                        continue  # private field
                    serde = " ".join(a for a in fattrs if a.strip().startswith("serde"))
                    if re.search(r"\bskip(_deserializing)?\b(?!_)", serde):
                        continue
                    key = rename(fm.group(1), rule)
                    r = re.search(r'\brename\s*=\s*"([^"]+)"', serde)
                    if r:
                        key = r.group(1)
                    pub_at = re.search(r"\bpub\b", ATTR_RE.sub(lambda a: " " * len(a.group(0)), part))
                    line = text.count("\n", 0, open_at + 1 + offset + (pub_at.start() if pub_at else 0)) + 1
                    struct.fields.append(
                        Field(fm.group(1), key, " ".join(fm.group(2).split()), bool(re.search(r"\bflatten\b", serde)), line)
                    )
                structs.setdefault(struct.name, []).append(struct)
    return structs, sections


def resolve(structs: dict[str, list[Struct]], name: str, crate: str) -> Struct | None:
    candidates = structs.get(name, [])
    same = [s for s in candidates if s.crate == crate]
    if same:
        return same[0]
    return candidates[0] if len(candidates) == 1 else None


def nested(structs: dict[str, list[Struct]], f: Field, crate: str) -> list[Struct]:
    found = []
    for ident in re.findall(r"[A-Za-z_]\w*", f.type):
        s = resolve(structs, ident, crate)
        if s is not None:
            found.append(s)
    return found


CODE_FENCE_RE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE_RE = re.compile(r"(`+)(.+?)\1", re.S)


def code_words(page: Path) -> set[str]:
    """Words that occur in the page's code: fenced blocks and inline code."""
    text = page.read_text(encoding="utf-8")
    chunks = [m.group(0) for m in CODE_FENCE_RE.finditer(text)]
    prose = CODE_FENCE_RE.sub(" ", text)
    chunks += [m.group(2) for m in INLINE_CODE_RE.finditer(prose)]
    words: set[str] = set()
    for chunk in chunks:
        words.update(re.findall(r"[A-Za-z0-9_-]+", chunk))
        words.update(re.findall(r"[A-Za-z0-9_]+", chunk))
    return words


def check_keys(listing: bool = False) -> list[Problem]:
    structs, sections = parse_sources()
    problems: list[Problem] = []
    if not sections:
        return [Problem("-", "-", "no `impl ConfigSection` found in mamey-*/src")]
    for key, name, crate, path, line in sections:
        if key not in SECTION_PAGES:
            problems.append(
                Problem("-", key, f"section `{key}` ({name}, {path.relative_to(ROOT)}:{line}) has no chapter: "
                        "add it to SECTION_PAGES in scripts/check_guide.py")
            )
    ordered = sorted(sections, key=lambda s: list(SECTION_PAGES).index(s[0]) if s[0] in SECTION_PAGES else len(SECTION_PAGES))
    owner: dict[str, str] = {}  # struct name -> page that checks its fields
    seen: set[tuple[str, str]] = set()
    words_of: dict[str, set[str]] = {}
    for key, name, crate, path, line in ordered:
        page = SECTION_PAGES.get(key)
        if page is None:
            continue
        if page not in words_of:
            words_of[page] = code_words(SRC / page) if (SRC / page).is_file() else set()
        words = words_of[page]
        root = resolve(structs, name, crate)
        if root is None:
            problems.append(Problem(page, key, f"section `{key}`: cannot find struct {name} in {crate}"))
            continue
        if key not in words:
            problems.append(Problem(page, key, f"section `[{key}]` ({name}, {path.relative_to(ROOT)}:{line})"))

        def walk(struct: Struct, prefix: str, depth: int) -> None:
            if depth > 8:
                return
            for f in struct.fields:
                dotted = prefix if f.flatten else f"{prefix}.{f.key}"
                if not f.flatten and (page, dotted) not in seen:
                    seen.add((page, dotted))
                    if listing:
                        print(f"guide: key {page}: {dotted}")
                    if f.key not in words:
                        problems.append(
                            Problem(page, dotted,
                                    f"`{dotted}` (field `{f.name}` of {struct.name}, "
                                    f"{struct.file.relative_to(ROOT)}:{f.line})")
                        )
                for inner in nested(structs, f, struct.crate):
                    holder = owner.setdefault(inner.name, page)
                    if holder == page:
                        walk(inner, dotted, depth + 1)

        owner.setdefault(root.name, page)
        walk(root, key, 0)
    return problems


# ------------------------------------------------------------ rust blocks --


FENCE_OPEN_RE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
INCLUDE_RE = re.compile(r"^\{\{#(?:include|rustdoc_include)\s+(?P<spec>[^}\s]+)\s*\}\}$")
ANCHOR_RE = re.compile(r"\bANCHOR:\s*([\w-]+)")
ANCHOR_END_RE = re.compile(r"\bANCHOR_END:\s*([\w-]+)")


def fenced_blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """(line of the opening fence, info string, body lines) of each fenced block."""
    blocks: list[tuple[int, str, list[str]]] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = FENCE_OPEN_RE.match(lines[i])
        if not m or (m.group("fence")[0] == "`" and "`" in m.group("info")):
            i += 1
            continue
        fence = m.group("fence")
        close = re.compile(r"^[ \t]*" + re.escape(fence[0]) + "{" + str(len(fence)) + r",}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j]):
            j += 1
        blocks.append((i + 1, m.group("info").strip(), lines[i + 1 : j]))
        i = j + 1
    return blocks


def check_include(page: Path, spec: str) -> str | None:
    """Why `{{#include spec}}` on `page` does not resolve, or None."""
    path, _, selector = spec.partition(":")
    target = (page.parent / path).resolve()
    if not target.is_file():
        return f"no such file `{path}`"
    anchor = selector.split(":")[0] if selector else ""
    if not anchor or re.fullmatch(r"\d*", anchor):
        return None  # the whole file, or a line range
    text = target.read_text(encoding="utf-8", errors="replace")
    starts = set(ANCHOR_RE.findall(text))
    ends = set(ANCHOR_END_RE.findall(text))
    if anchor not in starts and anchor not in ends:
        return f"no anchor `{anchor}` in `{path}` (mdbook would render an empty block)"
    if anchor not in starts:
        return f"no `ANCHOR: {anchor}` in `{path}`, only its `ANCHOR_END`"
    if anchor not in ends:
        return f"no `ANCHOR_END: {anchor}` in `{path}`"
    return None


def check_rust_blocks() -> list[Problem]:
    problems: list[Problem] = []
    for page in sorted(SRC.glob("*.md")):
        name = page.relative_to(SRC).as_posix()
        for line, info, body in fenced_blocks(page.read_text(encoding="utf-8")):
            if not info.startswith("rust"):
                continue
            pasted = False
            for offset, raw in enumerate(body, start=1):
                text = raw.strip()
                if not text:
                    continue
                m = INCLUDE_RE.match(text)
                if not m:
                    pasted = True
                    continue
                reason = check_include(page, m.group("spec"))
                if reason:
                    problems.append(
                        Problem(name, f"include:{m.group('spec')}",
                                f"{name}:{line + offset}: `{{{{#include {m.group('spec')}}}}}`: {reason}")
                    )
            if pasted:
                problems.append(
                    Problem(name, f"rust-block:{line}",
                            f"{name}:{line}: a ```{info} block with pasted code; include it from "
                            "examples/guide (`{{#include ../../examples/guide/src/FILE.rs:ANCHOR}}`)")
                )
    return problems


# ------------------------------------------------------------------- main --


def read_allow_list() -> set[tuple[str, str]]:
    allowed: set[tuple[str, str]] = set()
    if not ALLOW_FILE.is_file():
        return allowed
    for raw in ALLOW_FILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        page, _, item = line.partition(":")
        allowed.add((page.strip(), item.strip()))
    return allowed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-build", action="store_true", help="check the book already in docs/book")
    parser.add_argument("--list", action="store_true", help="print every configuration key checked")
    args = parser.parse_args()

    if not args.no_build and not build_book():
        return 2
    if not (BOOK / "index.html").is_file():
        print("guide: docs/book/index.html missing; build the book first", file=sys.stderr)
        return 2

    allowed = read_allow_list()
    failures, tolerated = [], []
    found: set[tuple[str, str]] = set()
    checks = (("link", check_links()), ("key", check_keys(args.list)), ("rust", check_rust_blocks()))
    for kind, problems in checks:
        for p in problems:
            found.add((p.page, p.item))
            (tolerated if (p.page, p.item) in allowed else failures).append((kind, p))

    for kind, p in tolerated:
        print(f"guide: allowed {kind} gap in {p.page}: {p.message}")
    for page, item in sorted(allowed - found):
        print(f"guide: note: {ALLOW_FILE.name} lists `{page}:{item}`, which is no longer a problem; remove it")
    for kind, p in failures:
        what = {"link": "broken link", "key": "undocumented key", "rust": "uncompiled Rust block"}[kind]
        if p.item.startswith("include:"):
            what = "broken include"
        print(f"guide: {what} in {p.page}: {p.message}")
    if failures:
        print(f"guide: FAILED: {len(failures)} problem(s), {len(tolerated)} allowed")
        return 1
    print(f"guide: ok ({len(tolerated)} allowed gap(s) listed in {ALLOW_FILE.relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
