"""The documentation: the site builds in MkDocs' strict mode, and every command the README and
docs/ show names modules, flags, DVC stages and repository files that exist."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tests.conftest import REPO_ROOT

# ---- reading the commands out of Markdown -------------------------------------------------------

SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "text"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)"
                   r"^[ \t]*(?P=fence)[ \t]*$", re.M | re.S)
OPERATOR = re.compile(r"^[();<>|&]+$")                  # &&, |, ;, &, (, ), >, ...
REDIRECT = re.compile(r"^[<>]+$")                       # its next token is a file name, not an argument
ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")              # VAR=value before a command
SHELL_WORDS = {"do", "then", "else", "elif", "if", "while", "until", "{", "}", "!", "time", "exec"}


def code_blocks(markdown: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block, the body dedented by the fence's indent."""
    blocks = []
    for match in FENCE.finditer(markdown):
        indent = len(match["indent"])
        body = "\n".join(line[indent:] if line[:indent].strip() == "" else line
                         for line in match["body"].splitlines())
        blocks.append((match["lang"].lower(), body))
    return blocks


def tokens(line: str) -> list[str]:
    """Shell words and operators of one logical line, comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def logical_lines(language: str, body: str) -> list[str]:
    """The block's commands as single lines: continuations (a trailing backslash, a quote still
    open) joined; in a console block only the `$ ` lines are commands."""
    commands, pending = [], ""
    for line in body.splitlines():
        if language == "console" and not pending:
            if not line.startswith("$ "):
                continue              # output
            line = line[2:]
        pending = f"{pending}\n{line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        try:
            tokens(pending)
        except ValueError:            # an open quote: the command goes on on the next line
            if language != "text":
                continue
        commands.append(pending)
        pending = ""
    if pending:
        commands.append(pending)
    return commands


def simple_commands(line: str) -> list[list[str]]:
    """argv of each simple command in a line (split at &&, |, ; ...), without leading
    variable assignments, shell keywords or redirections."""
    try:
        words = tokens(line)
    except ValueError:                # prose in a text block: words are enough
        words = line.split()
    commands, current, skip = [], [], False
    for word in words:
        if skip:
            skip = False
        elif REDIRECT.match(word):
            skip = True
        elif OPERATOR.match(word):
            commands.append(current)
            current = []
        else:
            current.append(word)
    commands.append(current)
    for argv in commands:
        while argv and (ASSIGNMENT.match(argv[0]) or argv[0] in SHELL_WORDS):
            argv.pop(0)
    return [argv for argv in commands if argv]


def shown_commands(markdown: str) -> list[list[str]]:
    """Every simple command of the document's shell, console and text blocks."""
    return [argv for language, body in code_blocks(markdown) if language in SHELL_LANGUAGES
            for line in logical_lines(language, body) for argv in simple_commands(line)]


# ---- what the repository holds ------------------------------------------------------------------

SOURCE_ROOTS = ("conf", "pipeline", "tests", "benchmarks", "hydra_plugins", "docs", ".ci", ".dvc")
ROOT_FILES = ("dvc.yaml", "dvc.lock", "params.yaml", "pyproject.toml", "Dockerfile", "mkdocs.yml", "README.md")
PATH_LIKE = re.compile(r"^[\w.\-/]+$")
INTERPOLATION = re.compile(r"\$\{([^}]+)\}")


@dataclass
class Repo:
    root: Path
    stages: dict[str, set[str] | None]        # stage -> its foreach items (None: not a foreach, or unknown)
    outputs: set[str] = field(default_factory=set)     # every resolved outs / metrics / plots path
    generated: set[str] = field(default_factory=set)   # top folders of those, and the conf `paths` roots
    path_roots: set[str] = field(default_factory=set)  # the conf `paths` values themselves


def lookup(context: dict, dotted: str):
    value = context
    for part in dotted.strip().split("."):
        value = value[part]
    return value


def resolve(template: str, context: dict) -> str | None:
    """A dvc.yaml string with its ${...} filled from params.yaml (and item/key); None if any
    name is unknown."""
    try:
        return INTERPOLATION.sub(lambda m: str(lookup(context, m[1])), template)
    except (KeyError, TypeError):
        return None


def declared_paths(entries) -> list[str]:
    """Paths of an outs / metrics / plots list (strings, or {path: options})."""
    return [p for entry in entries or [] for p in ([entry] if isinstance(entry, str) else list(entry))]


def read_repo(root: Path) -> Repo:
    dvc = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    repo = Repo(root=root, stages={})
    for name, stage in dvc.get("stages", {}).items():
        contexts = [params]
        if "foreach" in stage:
            items = stage["foreach"]
            if isinstance(items, str):
                match = INTERPOLATION.fullmatch(items.strip())
                try:
                    items = lookup(params, match[1]) if match else None
                except (KeyError, TypeError):
                    items = None
            if isinstance(items, list):
                items = {str(i): i for i in items}
            repo.stages[name] = set(items) if isinstance(items, dict) else None
            contexts = [{**params, "key": key, "item": item} for key, item in (items or {}).items()]
            stage = stage.get("do", {})
        else:
            repo.stages[name] = None
        for context in contexts:
            for kind in ("outs", "metrics", "plots"):
                for template in declared_paths(stage.get(kind)):
                    if (path := resolve(template, context)) is not None:
                        repo.outputs.add(path.rstrip("/"))
    repo.outputs |= {p.rstrip("/") for p in declared_paths(dvc.get("plots"))}
    repo.path_roots = {str(v).rstrip("/") for v in (params.get("paths") or {}).values()}
    repo.generated = {p.split("/")[0] for p in repo.outputs | repo.path_roots}
    return repo


# ---- the checks ---------------------------------------------------------------------------------


def expand_braces(word: str) -> list[str]:
    """conf/model/{lstm,gru}.yaml -> conf/model/lstm.yaml, conf/model/gru.yaml (one group)."""
    match = re.search(r"\{([^{}]*,[^{}]*)\}", word)
    if not match:
        return [word]
    return [word[:match.start()] + choice + word[match.end():] for choice in match[1].split(",")]


def repository_paths(argv: list[str], repo: Repo) -> list[str]:
    """The words of a command that name something in the repository."""
    found = []
    for word in argv:
        if word.startswith("-") and "=" in word:
            word = word.split("=", 1)[1]
        for path in expand_braces(word.rstrip(",;:.")):
            if not PATH_LIKE.match(path) or path in {".", "./"}:
                continue
            top = path.removeprefix("./").split("/")[0]
            if path in ROOT_FILES or ("/" in path and top in set(SOURCE_ROOTS) | repo.generated):
                found.append(path.removeprefix("./"))
    return found


def path_problem(path: str, repo: Repo) -> str | None:
    """None when the path is in the working tree or, under a folder that stages write, is (in,
    or above) an output that `dvc repro` makes: a fresh clone has no onnx/ or models/ yet."""
    bare = path.rstrip("/")
    top = bare.split("/")[0]
    if top in repo.generated and top not in SOURCE_ROOTS:
        made = any(bare == out or bare.startswith(out + "/") or out.startswith(bare + "/") for out in repo.outputs)
        return None if made or bare in repo.path_roots else (
            f"{path}: neither in the repository nor made by a stage of dvc.yaml")
    return None if (repo.root / bare).exists() else f"{path}: no such file or folder in the repository"


def defined_flags(source: str) -> set[str]:
    """Every --flag an argparse add_argument (or pytest addoption) call in the source declares."""
    flags = set()
    for call in re.finditer(r"(?:add_argument|addoption)\(\s*((?:(?:\"[^\"]*\"|'[^']*')\s*,?\s*)+)", source):
        flags |= set(re.findall(r"[\"'](--[\w-]+)[\"']", call[1]))
    return flags


def module_problems(module: str, args: list[str], repo: Repo) -> list[str]:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return [f"python -m {module}: no such module"]
    origin = Path(spec.origin) if spec.origin and spec.origin != "built-in" else None
    if origin is None or repo.root.resolve() not in origin.resolve().parents:
        return []                     # not this project's (pip, venv): its flags are not ours to check
    flags = defined_flags(origin.read_text(encoding="utf-8"))
    source = origin.resolve().relative_to(repo.root.resolve())
    return [f"python -m {module} {arg.split('=')[0]}: {source} defines no such flag"
            for arg in args if arg.startswith("--") and len(arg) > 2 and arg.split("=")[0] not in flags]


DVC_VALUE_OPTIONS = {"-S", "--set-param", "-n", "--name", "-m", "--message", "-j", "--jobs", "--temp-dir"}


def dvc_targets(argv: list[str]) -> list[str]:
    """The stage targets of `dvc repro`, `dvc commit` and `dvc exp run`."""
    if argv[1:2] in (["repro"], ["commit"]):
        rest = argv[2:]
    elif argv[1:3] == ["exp", "run"]:
        rest = argv[3:]
    else:
        return []
    targets, skip = [], False
    for word in rest:
        if skip:
            skip = False
        elif word in DVC_VALUE_OPTIONS:
            skip = True
        elif not word.startswith("-"):
            targets.append(word)
    return targets


def stage_problem(target: str, repo: Repo) -> str | None:
    name = target.split(":")[-1]                          # dvc.yaml:train@imdb-gru
    stage, _, item = name.partition("@")
    if stage not in repo.stages:
        return f"dvc target {target}: no stage {stage!r} in dvc.yaml (stages: {', '.join(sorted(repo.stages))})"
    items = repo.stages[stage]
    if item and items is not None and item not in items:
        return f"dvc target {target}: {stage} has no item {item!r} (items: {', '.join(sorted(items))})"
    return None


def command_problems(argv: list[str], repo: Repo) -> list[str]:
    """What in one shown command names something that does not exist."""
    problems = [p for path in repository_paths(argv, repo) if (p := path_problem(path, repo))]
    program = Path(argv[0]).name
    if re.fullmatch(r"python(\d+(\.\d+)?)?", program) or program == "torchrun":
        if "-m" in argv[1:-1]:
            at = argv.index("-m")
            problems += module_problems(argv[at + 1], argv[at + 2:], repo)
    elif program == "dvc":
        problems += [p for target in dvc_targets(argv) if (p := stage_problem(target, repo))]
    return problems


def documents() -> list[Path]:
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("**/*.md"))]


# ---- the tests ----------------------------------------------------------------------------------


def test_the_docs_site_builds_in_strict_mode(tmp_path):
    # strict: true in mkdocs.yml and --strict here: any warning (a broken link or anchor, a page
    # missing from nav, a link outside docs/) fails the build.
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                             str(REPO_ROOT / "mkdocs.yml"), "--site-dir", str(tmp_path / "site")],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "site/index.html").is_file() and (tmp_path / "site/cells/index.html").is_file()


def test_every_command_in_the_readme_and_the_docs_names_modules_flags_stages_and_files_that_exist():
    repo = read_repo(REPO_ROOT)
    problems, checked = [], 0
    for document in documents():
        for argv in shown_commands(document.read_text(encoding="utf-8")):
            checked += 1
            problems += [f"{document.relative_to(REPO_ROOT)}: {p}   [{shlex.join(argv)}]"
                         for p in command_problems(argv, repo)]
    assert problems == []
    assert checked > 50        # the blocks were read: a parser that finds nothing passes nothing


def test_the_readme_shows_the_predict_one_liner_and_the_mlflow_ui():
    shown = [shlex.join(argv) for argv in shown_commands((REPO_ROOT / "README.md").read_text(encoding="utf-8"))]
    assert "python -m pipeline.deploy.predict onnx/imdb-gru/model.onnx --text 'A wonderful film.'" in shown
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in shown


def test_the_readme_links_every_page_of_the_docs():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    pages = [p.relative_to(REPO_ROOT).as_posix() for p in sorted((REPO_ROOT / "docs").glob("*.md"))]
    assert pages and [p for p in pages if f"]({p})" not in readme] == []


def test_the_command_checker_reports_a_made_up_module_flag_file_and_stage():
    repo = read_repo(REPO_ROOT)
    markdown = "\n".join([
        "```bash",
        "python -m pipeline.no_such_module --text x",
        "python -m pipeline.deploy.predict onnx/imdb-gru/model.onnx --no-such-flag 1",
        "pytest tests/test_no_such_file.py && python -m pipeline.config  # conf/ok-in-a-comment.yaml",
        "dvc repro trian@imdb-gru",
        "dvc exp run -S train.lr=1e-3 train@imdb-peephole",
        "ls onnx/no-such-run/model.onnx",
        "```",
    ])
    problems = [p for argv in shown_commands(markdown) for p in command_problems(argv, repo)]
    assert len(problems) == 6, problems
    for expected in ("pipeline.no_such_module: no such module", "--no-such-flag: pipeline/deploy/predict.py defines no",
                     "tests/test_no_such_file.py: no such file", "no stage 'trian'", "no item 'imdb-peephole'",
                     "onnx/no-such-run/model.onnx: neither"):
        assert any(expected in p for p in problems), (expected, problems)


def test_the_command_checker_accepts_what_dvc_repro_makes_and_what_the_repository_holds():
    repo = read_repo(REPO_ROOT)
    markdown = "\n".join([
        "```console",
        "$ python -m pipeline.deploy.predict onnx/etth1-lstm/model.onnx --int8 \\",
        "    --csv last_week.csv",
        "output line that is not a command: python -m not.a.command",
        "```",
        "  ```sh",                                     # indented, as inside a list item
        "  cat data/prepared/imdb/data/tokenizer.json metrics/ conf/model/{lstm,gru}.yaml .ci/run",
        "  RB_OFFLINE_DIR=../shared/data dvc repro -f fetch@imdb embed@imdb > log.txt",
        "  ```",
    ])
    commands = shown_commands(markdown)
    assert [argv[:3] for argv in commands] == [["python", "-m", "pipeline.deploy.predict"], ["cat",
                                               "data/prepared/imdb/data/tokenizer.json", "metrics/"],
                                               ["dvc", "repro", "-f"]]
    assert [p for argv in commands for p in command_problems(argv, repo)] == []
