"""What every method's settings dataclass shares: a copy with some fields changed, checked."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from .edit import EditError

# Whether an edit keeps, by default, what the model predicts after a person who declared he or
# she (`interp.mitigate.lsdm.declared_prompts`), as it keeps the definitional words: one
# default for every method's settings.
KEEP_DECLARED = False
# Whether LSDM's he/she edit at the last token, by default, also fits the he/she-declared
# prompts with targets that follow the declared pronoun (`interp.mitigate.lsdm`).
FOLLOW_DECLARED = False
# For a contrast whose goal is "follow": the declared group's log-odds against the others that an
# edit asks for at least, in every method.
FOLLOW_MARGIN = 1.0


class Settings:
    """Base of a method's frozen settings dataclass (`LSDMSettings`, `FTSettings`): each
    default is defined once, on the dataclass, and a call overrides fields by name."""

    label: ClassVar[str] = "setting"

    def with_(self, **changes):
        """A copy with `changes`; an unknown name is an error that lists the known ones."""
        known = [f.name for f in dataclasses.fields(self)]
        unknown = sorted(set(changes) - set(known))
        if unknown:
            raise EditError(f"unknown {self.label} {', '.join(map(repr, unknown))}: the "
                            f"settings are {', '.join(known)}")
        return dataclasses.replace(self, **changes)
