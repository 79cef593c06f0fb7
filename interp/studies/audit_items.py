"""The implicit-reward audit's item sets (misgendering after TANGO, disclosure): they live in
`interp.measure.audit_items`, where the declared-pronouns suite reads them too; this is the
name the studies' users know them by."""

from ..measure.audit_items import *  # noqa: F401,F403
from ..measure.audit_items import __all__  # noqa: F401
