"""The configuration's composition: conf/ through Hydra into params.yaml, the `runs` and `embeds`
resolvers, and what `python -m pipeline.config [override ...]` does: compose, validate, write (or check)
params.yaml.

pipeline/config.py holds the schema that validates the result and loads it for the stages.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pipeline.config import CONF_DIR, ConfigError, derive_embeds, derive_runs, validate


def register_resolvers() -> None:
    """`${runs:${task},${model}}` and `${embeds:${task}}` in conf/; Hydra's plugin discovery
    calls this for DVC too (hydra_plugins/pipeline_resolvers.py)."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver(
        "embeds", lambda tasks: OmegaConf.create(derive_embeds(OmegaConf.to_container(tasks, resolve=True))),
        replace=True)

    OmegaConf.register_new_resolver(
        "runs", lambda tasks, models: OmegaConf.create(derive_runs(OmegaConf.to_container(tasks, resolve=True),
                                                                   OmegaConf.to_container(models, resolve=True))),
        replace=True)


def compose(overrides: list[str] | None = None, config_dir: Path = CONF_DIR) -> dict[str, Any]:
    """Compose conf/ with Hydra, resolved, exactly as DVC's Hydra support does."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    register_resolvers()
    with initialize_config_dir(str(Path(config_dir).resolve()), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides or []))
    OmegaConf.resolve(cfg)
    return OmegaConf.to_container(cfg)  # type: ignore[return-value]


def to_yaml(container: dict[str, Any]) -> str:
    """The text DVC writes for a composed config (OmegaConf's YAML dump)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(container))


def _override_error(overrides: list[str], exc: Exception) -> str:
    """One line for overrides that Hydra rejects; a misspelt key gets the nearest valid keys."""
    import difflib
    import re

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    text = str(exc).split("\nConfig search path:")[0].strip()  # Hydra's message, in one line
    text = re.sub(r"\n[ \t]+", ", ", re.sub(r":\s*\n[ \t]+", ": ", text))  # indented lists
    message = re.sub(r"([.?!]); ", r"\1 ", re.sub(r"\s*\n\s*", "; ", text))
    if exc.__cause__ is not None and str(exc.__cause__).splitlines()[0] not in message:
        message += f" ({str(exc.__cause__).splitlines()[0]})"
    parser, parsed = OverridesParser.create(), []
    for line in overrides:
        try:
            parsed.append(parser.parse_override(line))
        except HydraException:  # then exc is this syntax error
            return f"conf/: override {line}: {message}"
    bad = next((o for o in parsed if o.input_line in str(exc) or re.search(
        rf"(?<![\w.@/+~]){re.escape(o.key_or_group)}(?![\w@/]|\.\w)", str(exc))), None)
    if bad is None:
        return f"conf/: {message}"
    head = f"conf/: override {bad.input_line}"
    try:  # the valid keys: the composition without the bad override
        node = compose([o for o in overrides if o != bad.input_line])
    except (HydraException, OmegaConfBaseException):
        return f"{head}: {message}"
    seen: list[str] = []
    for part in bad.key_or_group.split("."):
        if not isinstance(node, dict) or part not in node:
            break
        node, seen = node[part], [*seen, part]
    else:  # the key exists: some other mistake, in Hydra's words
        return f"{head}: {message}"
    if not isinstance(node, dict):
        kind = type(node).__name__
        return f"{head}: no such key {part!r}: {'.'.join(seen)} holds a {kind}, not keys"
    keys = sorted(str(key) for key in node)
    near = difflib.get_close_matches(part, keys, n=3)
    hint = f"; did you mean {' or '.join(near)}?" if near else ""
    where = f"under {'.'.join(seen)}" if seen else "at the top level"
    return f"{head}: no such key {part!r} {where}{hint} (valid keys: {', '.join(keys)})"


def write_params(overrides: list[str], output: Path, check: bool) -> int:
    """`python -m pipeline.config` (its arguments are pipeline/config.py's): compose, validate,
    then write `output` or, with `check`, compare it; the exit status."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        container = compose(overrides)
    except (HydraException, OmegaConfBaseException) as exc:  # an override that Hydra rejects
        print(_override_error(overrides, exc), file=sys.stderr)
        return 2
    try:
        validate(container, source="conf/ (composed)")
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    text = to_yaml(container)
    if check:
        if not output.is_file() or output.read_text(encoding="utf-8") != text:
            print(f"{output} differs from conf/; run `python -m pipeline.config`", file=sys.stderr)
            return 1
        print(f"{output} is up to date with conf/")
        return 0
    from pipeline.files import write_text_atomic

    write_text_atomic(output, text)
    print(f"wrote {output}")
    return 0
