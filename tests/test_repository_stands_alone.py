"""The repository stands on its own: every file a document or comment names is in the repository.

People clone this repository with nothing beside it, so a reference to a design note, a guide or a
module that lives elsewhere (or no longer exists) leaves the reader stranded. The scan covers every
tracked file and every untracked file that git does not ignore, so a new file is checked before it
is committed. In Python files only comments and docstrings count; strings in code are data, and
tests create their own files at run time.
"""

from __future__ import annotations

import ast
import io
import posixpath
import re
import subprocess
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Which files are read, by suffix or by exact name; everything under templates/ is read too.
SCANNED_SUFFIXES = frozenset({".md", ".py", ".toml", ".yml", ".yaml", ".cfg"})
SCANNED_NAMES = frozenset({"Dockerfile", "Makefile", ".env.example"})
SCANNED_FOLDERS = ("templates/",)

# A token ending in one of these is a file reference when it contains a slash.
FILE_SUFFIXES = (
    ".md", ".py", ".toml", ".yml", ".yaml", ".cfg", ".json", ".txt", ".html", ".css", ".sh", ".key",
    ".example",
)

# References that are right although nothing in the repository matches them. Keep this short:
# every entry says why the path need not exist. A prefix ending in "/" covers everything under it.
IGNORED: dict[str, str] = {
    "var/": "local state that `make run` and the tests create (APPEALS_VAR_DIR)",
    ".venv/": "the virtualenv that `make` creates",
    "tests/artifacts/": "screenshots the browser test writes; ignored by git",
    "deploy/address_book.toml": "the operator's copy of deploy/address_book.example.toml (README)",
    "secrets/": "keys and certificates deploy/init-secrets.sh makes on the host; ignored by git",
    "./secrets/": "the same folder as the compose file names it",
    "ca/": "the private CA deploy/init-secrets.sh keeps beside secrets/ on the host",
}

# Cut text into words: whitespace, quotes, brackets, separators and colons end a path, so a pytest
# node id, a compose volume "source:target:ro" and a markdown link each give the bare path.
_WORD = re.compile(r"[^\s`'\"()\[\]<>{},;|=:]+")
_URL = re.compile(r"\b[a-zA-Z][\w+.-]*://\S+")
_HOSTNAME = re.compile(r"^[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}$")
_GLOB_OR_VARIABLE = re.compile(r"[*?$%@#~\\]")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    reference: str
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reference!r} {self.why}"


def repository_files(root: Path) -> list[str]:
    """Tracked files plus untracked ones git does not ignore, as posix paths from the root."""
    listed: set[str] = set()
    for extra in ([], ["--others", "--exclude-standard"]):
        out = subprocess.run(
            ["git", "ls-files", "-z", *extra], cwd=root, check=True, capture_output=True
        ).stdout
        listed.update(name for name in out.decode().split("\0") if name)
    return sorted(name for name in listed if (root / name).is_file())


def is_scanned(name: str) -> bool:
    path = PurePosixPath(name)
    return path.suffix in SCANNED_SUFFIXES or path.name in SCANNED_NAMES or name.startswith(SCANNED_FOLDERS)


def prose_of_python(source: str) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring; the whole source if it does not parse."""
    try:
        tree = ast.parse(source)
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (SyntaxError, tokenize.TokenError):
        return [(1, source)]
    parts = [(tok.start[0], tok.string) for tok in tokens if tok.type == tokenize.COMMENT]
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            docstring = ast.get_docstring(node, clean=False)
            if docstring is not None:
                parts.append((node.body[0].lineno, docstring))
    return parts


def candidate_references(text: str) -> Iterable[tuple[int, str]]:
    """(line offset, token) of every word in `text` that names a file or folder of the repository."""
    for offset, line in enumerate(text.splitlines()):
        line = _URL.sub(" ", line)
        for match in _WORD.finditer(line):
            token = match.group().rstrip(".,!")
            if not token or _GLOB_OR_VARIABLE.search(token) or token.startswith("/"):
                continue  # absolute system paths, globs, variables, e-mail addresses
            if "/" not in token:
                if token.endswith(".md") and not token.startswith("."):
                    yield offset, token  # a document named on its own, e.g. a design note
                continue
            first = token.split("/", 1)[0]
            if first not in (".", "..") and _HOSTNAME.match(first):
                continue  # a web address written without its scheme
            if token.startswith("../") or token.endswith(FILE_SUFFIXES) or token.endswith("/"):
                yield offset, token


def check_reference(present: frozenset[str], file: str, token: str) -> str | None:
    """Why `token`, named in `file`, is a broken reference; None when it is fine.

    `present` holds every file of the repository and every folder above one, as posix paths from the
    root. A file that exists only on this machine (ignored by git, or beside the clone) is not in it.
    """
    path = token[2:] if token.startswith("./") else token
    if any(path == entry or (entry.endswith("/") and path.startswith(entry)) for entry in IGNORED):
        return None
    if token.endswith("/") and not token.startswith("../") and path.split("/", 1)[0] not in present:
        return None  # a folder word such as "and/or/" or "pipeline/bare/": not a repository path
    bases = [posixpath.dirname(file)]
    if not token.startswith("../"):
        bases.append("")  # paths in prose are written from the repository root
    for base in bases:
        target = posixpath.normpath(posixpath.join(base, path))
        if target == ".." or target.startswith("../"):
            return "points outside the repository"
        if target in present:
            return None
    return "does not exist in the repository"


def scan(files: dict[str, str], repository: Iterable[str]) -> list[Problem]:
    """Every broken reference in `files` (path -> text) to a path that is not in `repository`."""
    present = frozenset(
        str(folder) for name in repository for folder in [PurePosixPath(name), *PurePosixPath(name).parents]
    ) - {"."}
    problems: list[Problem] = []
    for name, text in sorted(files.items()):
        parts = prose_of_python(text) if name.endswith(".py") else [(1, text)]
        for first_line, part in parts:
            for offset, token in candidate_references(part):
                why = check_reference(present, name, token)
                if why:
                    problems.append(Problem(name, first_line + offset, token, why))
    return sorted(problems, key=lambda p: (p.file, p.line, p.reference))


def test_every_named_path_is_in_the_repository() -> None:
    repository = repository_files(ROOT)
    files = {}
    for name in repository:
        if is_scanned(name):
            try:
                files[name] = (ROOT / name).read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
    assert len(files) > 50, "the scan found almost no files: is this a git checkout?"
    problems = scan(files, repository)
    assert not problems, "references to files that are not in the repository:\n" + "\n".join(
        map(str, problems)
    )


# "docs/design.md section 2.9", "docs/design.md sections 3.1 and 3.6", also across a line break.
_SECTION_CITATION = re.compile(
    r"docs/design\.md`?,?\s+sections?\s+(\d+(?:\.\d+)?)(?:\s+and\s+(\d+(?:\.\d+)?))?"
)
_SECTION_HEADING = re.compile(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", re.MULTILINE)


def test_every_cited_design_section_exists() -> None:
    sections = set(_SECTION_HEADING.findall((ROOT / "docs" / "design.md").read_text(encoding="utf-8")))
    missing = []
    for name in repository_files(ROOT):
        if not is_scanned(name):
            continue
        try:
            text = (ROOT / name).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for match in _SECTION_CITATION.finditer(" ".join(text.split())):
            missing += [f"{name}: section {n}" for n in match.groups() if n and n not in sections]
    assert not missing, "citations of sections that docs/design.md does not have:\n" + "\n".join(missing)


def test_the_scanner_catches_outside_and_missing_references() -> None:
    files = {
        "README.md": "Design: `../shared/DESIGN.md`. Also docs/design.md and docs/nothing.md.\n"
        "See [the design](docs/design.md), https://example.org/docs/gone.md, /usr/bin/chromium,\n"
        "tests/*.py, var/outbox/ and the docs/ folder.\n",
        "docs/guide.md": "Back to [the design](design.md), README.md and [nowhere](../docs/missing.md).\n",
        "domain/x.py": '"""Rules (STYLE.md)."""\n\n# see docs/design.md section 2, not docs/gone.md\n'
        'PATH = "docs/created_at_run_time.md"\n',
    }
    repository = [*files, "docs/design.md"]
    problems = {(p.file, p.line, p.reference): p.why for p in scan(files, repository)}
    assert problems == {
        ("README.md", 1, "../shared/DESIGN.md"): "points outside the repository",
        ("README.md", 1, "docs/nothing.md"): "does not exist in the repository",
        ("docs/guide.md", 1, "../docs/missing.md"): "does not exist in the repository",
        ("domain/x.py", 1, "STYLE.md"): "does not exist in the repository",
        ("domain/x.py", 3, "docs/gone.md"): "does not exist in the repository",
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("see DEVELOPERS.md", ["DEVELOPERS.md"]),
        ("`tests/test_x.py::test_y` and worker/settings.py", ["tests/test_x.py", "worker/settings.py"]),
        ("- ./deploy/a.toml:/etc/a.toml:ro", ["./deploy/a.toml"]),
        ("http://127.0.0.1:8233/x.md or olga@example.org/x.md", []),
        ("pipeline / bare, and/or", []),
    ],
)
def test_candidate_references(text: str, expected: list[str]) -> None:
    assert [token for _, token in candidate_references(text)] == expected
