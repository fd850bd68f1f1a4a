"""A testing kit for plugin authors, installed with the package.

- `assistant.testing.fakes`: scriptable fake engines for every role and a plugin that registers them;
- `assistant.testing.media`: image and audio parts (and the bytes inside them) for turns;
- `assistant.testing.server`: a real server on port 0 with the plugins you choose, and a JSON client;
- `assistant.testing.fixtures`: the same as pytest fixtures (a `pytest11` plugin: loaded by pytest
  wherever this package is installed);
- `assistant.testing.conformance`: one test class per engine role (and for modalities) that a
  plugin's own tests subclass to check the engine keeps the contract the core relies on;
- `assistant.testing.part_conformance`: the same for part types.

Nothing here imports pytest at module level except `fixtures` and the conformance suites.
"""
