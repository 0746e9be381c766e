"""`Config`: settings shared by the nodes of a graph (model names, prompts, limits...).

A graph hands its config to every node that has none of its own, so ``self.config.get(...)``
works in any node of ``Graph(start, config=Config(model="small"))``. Entirely optional:
a node without one has an empty `Config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["Config"]


class Config:
    """A small key-value store with dict-like reads and a non-destructive `merge`."""

    def __init__(self, **values: Any) -> None:
        self._values: dict[str, Any] = dict(values)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when it is not set."""
        return self._values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Set one value."""
        self._values[key] = value

    def update(self, **values: Any) -> None:
        """Set several values at once."""
        self._values.update(values)

    def merge(self, other: Config | Mapping[str, Any]) -> Config:
        """A new `Config` with this one's values overlaid by ``other``'s (``other`` wins).

        Anything that is neither a `Config` nor a mapping returns this config itself.
        """
        if isinstance(other, Config):
            return Config(**{**self._values, **other._values})
        if isinstance(other, Mapping):
            return Config(**{**self._values, **other})
        return self

    def to_dict(self) -> dict[str, Any]:
        """A copy of the values as a plain dict."""
        return dict(self._values)

    def __bool__(self) -> bool:
        return bool(self._values)

    def __repr__(self) -> str:
        return f"Config({self._values!r})"


def as_config(config: Config | Mapping[str, Any] | None) -> Config:
    """The `Config` a node keeps for a constructor's ``config=`` argument.

    A plain mapping is accepted (KayGraph code sometimes passes a dict, which works there
    by duck typing) and wrapped; any other type is a mistake that KayGraph would carry
    silently until a node calls ``.get`` on it, so it fails here, where it was made.
    """
    if config is None:
        return Config()
    if isinstance(config, Config):
        return config
    if isinstance(config, Mapping):
        return Config(**config)
    raise TypeError(f"config must be a Config or a mapping, not {type(config).__name__}")
