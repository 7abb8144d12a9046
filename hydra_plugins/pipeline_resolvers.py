"""Registers the OmegaConf resolvers that conf/ uses (`${runs:...}`, `${embeds:...}`).

Hydra imports every module of the `hydra_plugins` namespace when it scans for plugins, and
DVC points that scan at the repository root (`hydra.plugins_path`) before `dvc exp run -S`
composes params.yaml, so the resolvers exist there too. pipeline.config registers them
itself for `python -m pipeline.config`.
"""

from pipeline.compose import register_resolvers

register_resolvers()
