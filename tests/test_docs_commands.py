"""Every command line the README and docs/RESULTS.md show parses with today's command line: a renamed
or removed flag, a bad choice or a training option out of range fails here, not in a user's shell.
(Running them is the job of the tests of each verb; many take minutes.)"""

import dataclasses
import functools
import re
import shlex
from pathlib import Path

import pytest

from tinydiff.cli import build_parser
from tinydiff.config import TrainConfig, validate

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "RESULTS.md", ROOT / "docs" / "package-index.md"]


def _command_lines(path: Path) -> list[str]:
    """The ``tinydiff ...`` lines of a Markdown file's fenced code blocks, continuation lines joined,
    comments dropped, optional parts written ``[--flag value]`` kept."""
    lines, fenced, joined = [], False, ""
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            continue
        joined += re.sub(r"\s+#.*$", "", line).rstrip()
        if joined.endswith("\\"):
            joined = joined[:-1] + " "
            continue
        if joined.lstrip().startswith("tinydiff "):
            lines.append(joined.replace("[", "").replace("]", "").strip())
        joined = ""
    return lines


COMMANDS = [(path.name, line) for path in DOCS for line in _command_lines(path)]


def test_the_docs_show_commands_of_every_kind():
    verbs = {shlex.split(line)[1] for _, line in COMMANDS}
    assert {"fetch", "train", "sample", "eval", "fid", "invert", "interpolate", "merge", "reproduce"} <= verbs


@pytest.mark.parametrize("where, line", COMMANDS, ids=[f"{w}:{line[:60]}" for w, line in COMMANDS])
def test_every_command_line_in_the_docs_parses(where, line, capsys):
    try:
        argv = shlex.split(line)[1:]
        args = build_parser().parse_args(argv[: argv.index(">")] if ">" in argv else argv)  # a shell redirection
    except SystemExit:
        pytest.fail(f"{where}: {line}\n{capsys.readouterr().err}")
    if args.command == "train":  # the training options are checked by TrainConfig, before anything runs
        validate(TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}))


@functools.cache  # read once per page, not once per link to it
def _anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a Markdown page's headings: the text (a link's text only) lower-cased, all
    but letters, digits, spaces, hyphens and underscores dropped, spaces made hyphens; a repeated one
    gets -1, -2, ... Headings inside fenced code are not headings."""
    anchors, count, fenced = set(), {}, False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        heading = None if fenced else re.match(r"#{1,6}\s+(.*?)\s*$", line)
        if heading:
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1)).lower()
            anchor = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
            repeats = count[anchor] = count.get(anchor, -1) + 1
            anchors.add(f"{anchor}-{repeats}" if repeats else anchor)
    return anchors


def test_every_relative_link_and_image_in_the_docs_exists_and_every_anchor_names_a_heading():
    pages = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
        *sorted((ROOT / "docs" / "results").glob("*.md")),
    ]
    missing = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            path, _, anchor = target.partition("#")
            if re.match(r"[a-z]+:", path):
                continue
            linked = page.parent / path if path else page
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in _anchors(linked)):
                missing.append(f"{page.relative_to(ROOT)}: {target}")
    assert not missing, "\n".join(missing)


def test_the_package_index_page_links_nothing_relative():
    """A package index shows the readme without the repository around it: a relative link breaks there."""
    import tomllib

    readme = ROOT / tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["readme"]
    links = re.findall(r"\]\(([^)\s]+)\)", readme.read_text())
    assert readme.exists() and not [link for link in links if not re.match(r"[a-z]+:", link)]
